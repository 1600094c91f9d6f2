"""A compiled pipeline's task run as a pod, as Kubeflow Pipelines' v2 backend runs it (test-only).

KFP has no binary here, so this follows what its driver and launcher do (kubeflow/pipelines
v2.x ``backend/src/v2/driver/driver.go`` and ``backend/src/v2/component/launcher_v2.go``):

- the **driver** decides whether a task runs (its ``triggerPolicy.condition`` over the
  pipeline's parameters, a CEL expression) and builds the pod: the executor's image, command and
  args with ``{{$}}`` replaced by the executor input JSON, the executor's ``resources``
  (``accelerator`` as a ``limits`` entry of its type, its count resolved from the task's
  parameters; none when 0), and the kubernetes platform spec (``configMapAsEnv``,
  ``nodeSelector``, ``tolerations``, ``emptyDirMounts``); the run's service account;
- the **launcher** downloads each input artifact from its ``s3://`` URI to the local path the
  SDK's executor reads (``/s3/<bucket>/<key>``, kfp ``dsl/types/artifact_types.py``) before the
  user code, and reads the executor output file after it. Here an init container of the same
  image does the download with the pod's own credentials, and the harness reads the output file
  from the pod's ``/tmp`` volume.

The harness runs containers read-only, so the pod gets emptyDir volumes at ``/tmp`` and ``/s3``
for what KFP's containers write on their root filesystem.
"""

from __future__ import annotations

import copy
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

NONROOT = {"runAsNonRoot": True, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False}
OUTPUT_FILE = "/tmp/kfp_outputs/output_metadata.json"
_DOWNLOAD = r"""
import json, os, sys, boto3
s3 = boto3.client("s3", endpoint_url=os.environ.get("S3_ENDPOINT_URL") or None)
for uri in json.loads(sys.argv[1]):
    bucket, _, key = uri[len("s3://"):].partition("/")
    local = "/s3/" + bucket + "/" + key
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=key.rstrip("/") + "/") for o in page.get("Contents", [])]
    if not keys:  # one object: a file artifact
        os.makedirs(os.path.dirname(local), exist_ok=True)
        s3.download_file(bucket, key, local)
    for k in keys:
        path = "/s3/" + bucket + "/" + k
        os.makedirs(os.path.dirname(path), exist_ok=True)
        s3.download_file(bucket, k, path)
    print("downloaded", uri, "->", local)
"""


def _cel(expr: str, values: dict) -> bool:
    """The CEL of KFP's trigger conditions, over parameter values (the subset it compiles)."""
    missing = [k for k in re.findall(r"inputs\.parameter_values\['([^']+)'\]", expr)
               if k not in values]  # fmt: skip
    if missing:  # an input the caller did not give: the branch is not taken
        return False

    def value(m: re.Match) -> str:
        return repr(values[m.group(1)])

    py = re.sub(r"inputs\.parameter_values\['([^']+)'\]", value, expr)
    py = py.replace("&&", " and ").replace("||", " or ").replace("!(", " not (")
    py = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", py))
    return bool(eval(py, {"__builtins__": {}, "int": int, "double": float, "string": str}))  # noqa: S307


@dataclass
class Task:
    name: str
    component: str
    executor: str
    inputs: dict  # the task spec's inputs (parameters and artifacts)


class CompiledPipeline:
    """The pipeline spec and its kubernetes platform spec, from the compiled YAML."""

    def __init__(self, path: Path) -> None:
        docs = list(yaml.safe_load_all(path.read_text()))
        self.spec = docs[0]
        platforms = docs[1]["platforms"]["kubernetes"] if len(docs) > 1 else {}
        self.platform = (platforms.get("deploymentSpec") or {}).get("executors", {})

    def tasks(self, params: dict, outputs: dict | None = None) -> list[Task]:
        """The container tasks a run with ``params`` would start (conditions evaluated).

        ``params`` are the pipeline's parameters; ``outputs`` gives upstream output parameters
        a condition reads, as ``{"<task>-<output>": value}``.
        """
        values = {f"pipelinechannel--{k}": v for k, v in params.items()}
        values.update({f"pipelinechannel--{k}": v for k, v in (outputs or {}).items()})
        found: list[Task] = []

        def walk(dag: dict) -> None:
            for name, task in dag["tasks"].items():
                cond = (task.get("triggerPolicy") or {}).get("condition")
                if cond and not _cel(cond, values):
                    continue
                comp = self.spec["components"][task["componentRef"]["name"]]
                if "dag" in comp:
                    walk(comp["dag"])
                elif "iteratorPolicy" not in task and "parameterIterator" not in task:
                    found.append(Task(name, task["componentRef"]["name"], comp["executorLabel"],
                                      task.get("inputs", {})))  # fmt: skip

        walk(self.spec["root"]["dag"])
        return found

    def task(self, name: str, params: dict, outputs: dict | None = None) -> Task:
        for task in self.tasks(params, outputs):
            if task.name == name:
                return task
        raise KeyError(f"task {name} does not run with {params}")

    # ---- the driver's pod ----------------------------------------------------------------
    def pod(self, task: Task, parameters: dict, artifacts: dict[str, tuple[str, str]],
            outputs: dict[str, str], name: str, namespace: str, service_account: str,
            pipeline_params: dict, upstream: dict[str, dict] | None = None) -> dict:  # fmt: skip
        """The pod of ``task``: ``parameters`` its input values, ``artifacts`` name -> (schema
        title, s3 URI), ``outputs`` its output artifacts name -> URI, ``upstream`` the output
        parameters of the tasks it reads from (``{task: {key: value}}``)."""
        upstream = upstream or {}
        container = self.spec["deploymentSpec"]["executors"][task.executor]["container"]
        declared = (self.spec["components"][task.component].get("outputDefinitions") or {}).get(
            "artifacts", {}
        )
        titles = {k: v["artifactType"]["schemaTitle"] for k, v in declared.items()}
        executor_input = {
            "inputs": {
                "parameterValues": parameters,
                "artifacts": {k: {"artifacts": [{"name": k, "type": {"schemaTitle": title},
                                                 "uri": uri, "metadata": {}}]}
                              for k, (title, uri) in artifacts.items()},
            },
            "outputs": {
                "parameters": {"Output": {"outputFile": "/tmp/kfp_outputs/Output"}},
                "artifacts": {k: {"artifacts": [{"name": k, "type": {"schemaTitle": titles.get(k, "system.Artifact")},
                                                 "uri": uri, "metadata": {}}]}
                              for k, uri in outputs.items()},
                "outputFile": OUTPUT_FILE,
            },
        }  # fmt: skip
        args = [json.dumps(executor_input) if a == "{{$}}" else a for a in container["args"]]
        main = {"name": "main", "image": container["image"], "command": container["command"],
                "args": args, "securityContext": dict(NONROOT),
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                                 {"name": "s3", "mountPath": "/s3"}]}  # fmt: skip
        values = {f"pipelinechannel--{k}": v for k, v in pipeline_params.items()}
        for producer, outs in upstream.items():
            values.update({f"pipelinechannel--{producer}-{k}": v for k, v in outs.items()})
        limits = self._limits(container.get("resources") or {}, values)
        if limits:
            main["resources"] = {"limits": limits, "requests": dict(limits)}
        platform = self.platform.get(task.executor) or {}
        env = []
        for source in platform.get("configMapAsEnv", []):
            for key in source.get("keyToEnv", []):
                env.append({"name": key["envVar"], "valueFrom": {"configMapKeyRef": {
                    "name": source["configMapName"], "key": key["configMapKey"],
                    "optional": bool(source.get("optional"))}}})  # fmt: skip
        main["env"] = env
        volumes = [{"name": "tmp", "emptyDir": {}}, {"name": "s3", "emptyDir": {}}]
        for mount in platform.get("emptyDirMounts", []):
            volumes.append(
                {"name": mount["volumeName"], "emptyDir": {"medium": mount.get("medium", "")}}
            )
            main["volumeMounts"].append(
                {"name": mount["volumeName"], "mountPath": mount["mountPath"]}
            )
        downloads = [uri for _, uri in artifacts.values()]
        init = {"name": "kfp-launcher", "image": container["image"],
                "command": ["python", "-c", _DOWNLOAD, json.dumps(downloads)],
                "env": env, "securityContext": dict(NONROOT),
                "volumeMounts": [{"name": "s3", "mountPath": "/s3"},
                                 {"name": "tmp", "mountPath": "/tmp"}]}  # fmt: skip
        spec = {"serviceAccountName": service_account, "restartPolicy": "Never",
                "initContainers": [init], "containers": [main], "volumes": volumes,
                "securityContext": {"runAsUser": 10001, "runAsGroup": 10001}}  # fmt: skip

        def from_task(ref: dict):  # noqa: ANN202 - a runtime value from an upstream task
            out = ref["taskOutputParameter"]
            value = upstream[out["producerTask"]][out["outputParameterKey"]]
            return json.loads(value) if isinstance(value, str) else value

        selector = platform.get("nodeSelector") or {}
        if "nodeSelectorJson" in selector:
            spec["nodeSelector"] = dict(from_task(selector["nodeSelectorJson"]) or {})
        elif selector.get("labels"):
            spec["nodeSelector"] = dict(selector["labels"])
        tolerations = []
        for tol in platform.get("tolerations", []):
            tolerations += (
                list(from_task(tol["tolerationJson"]) or [])
                if "tolerationJson" in tol
                else [copy.deepcopy(tol)]
            )
        if tolerations:
            spec["tolerations"] = tolerations
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace,
                             "labels": {"pipelines.kubeflow.org/v2_component": "true",
                                        "harness/task": task.name}},
                "spec": spec}  # fmt: skip

    @staticmethod
    def _limits(resources: dict, values: dict) -> dict:
        def resolve(value: object) -> str:
            m = re.fullmatch(r"\{\{\$\.inputs\.parameters\['([^']+)'\]\}\}", str(value))
            return str(values[m.group(1)]) if m else str(value)

        limits = {}
        if resources.get("resourceCpuLimit"):
            limits["cpu"] = resolve(resources["resourceCpuLimit"])
        if resources.get("resourceMemoryLimit"):
            limits["memory"] = resolve(resources["resourceMemoryLimit"])
        acc = resources.get("accelerator") or {}
        count = resolve(acc.get("resourceCount") or acc.get("count") or "0")
        if int(count) > 0:
            limits[acc.get("resourceType") or acc.get("type")] = count
        return limits


def run_pod(core, pod: dict, kubelet, timeout: float) -> dict:  # noqa: ANN001
    """Create the task's pod and wait for its end: ``{"phase", "log", "outputs"}``."""
    ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
    core.create_namespaced_pod(ns, pod)
    deadline = time.monotonic() + timeout
    phase = "Pending"
    while time.monotonic() < deadline:
        phase = core.read_namespaced_pod(name, ns).status.phase
        if phase in ("Succeeded", "Failed"):
            break
        time.sleep(0.5)
    run = kubelet.by_name(name, ns)
    log = ""
    outputs: dict = {}
    if run is not None:
        for path in sorted(run.workdir.glob("*.log")):
            log += path.read_text(errors="replace")
        out = run.workdir / "volumes" / "tmp" / OUTPUT_FILE[len("/tmp/") :]
        if out.exists():
            outputs = json.loads(out.read_text())
    return {"phase": phase, "log": log, "outputs": outputs}
