"""A cluster in processes: the controllers the kube-apiserver lacks, for tests (test-only code).

The tests' real kube-apiserver (tests/k8s/conftest.py) stores the objects; this module plays
what would act on them, following each project's documented behaviour:

- **Kubeflow Trainer v2 + JobSet + Job + kubelet** for a ``TrainJob`` (kubeflow/trainer v2.3.0):
  the ``ClusterTrainingRuntime`` it references is read from the API; the trainer's image,
  command, args, env and ``resourcesPerNode`` go into the runtime's ``node`` container
  (``pkg/runtime/framework/plugins/jobset/builder.go``), ``runtimePatches`` are merged onto the
  pod (``pkg/runtime/core/trainingruntime.go``); the torch plugin adds ``PET_NNODES``,
  ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK`` (from the pod's job-completion-index annotation),
  ``PET_MASTER_ADDR=<job>-node-0-0.<job>`` and ``PET_MASTER_PORT=29500``
  (``pkg/runtime/framework/plugins/torch/torch.go``). Pods are named and labelled as an Indexed
  Job of JobSet ``<job>`` makes them (hostname ``<job>-node-0-<i>``, subdomain ``<job>``;
  kubernetes-sigs/jobset v0.12.0 ``pkg/controllers/jobset_controller.go``). JobSet's webhook
  defaults the pods' ``restartPolicy`` to OnFailure (``pkg/webhooks/jobset_webhook.go``): a
  failed container restarts in place, and the Job fails after ``backoffLimit`` (Kubernetes'
  default 6) restarts (kubernetes ``pkg/controller/job/job_controller.go``); a failed Job fails
  the JobSet and the TrainJob copies its ``Failed`` condition (``FailedJobs``, "jobset failed due
  to one or more job failures (first failed job: <job>-node-0)"), or ``Complete``
  (``AllJobsCompleted``, "jobset completed successfully") when every pod succeeded.
- **KServe (Serverless) + Knative + kubelet** for an ``InferenceService``: each new
  ``storageUri`` is a revision ``<name>-predictor-0000N`` whose pod is built as KServe builds
  it (kserve v0.20.0): the ServingRuntime's container with ``{{.Name}}`` in its args replaced
  by the service's name and the predictor's resources; the storage initializer init container
  (``pkg/webhook/admission/pod/storage_initializer_injector.go``: image
  ``kserve/storage-initializer``, args ``[<storageUri>, /mnt/models]``, the emptyDir
  ``kserve-provision-location``, read-only in the model container) with the S3 settings of the
  service account's ``serving.kserve.io/s3-*`` annotations (``pkg/credentials/s3/utils.go``:
  ``AWS_ENDPOINT_URL``, ``S3_ENDPOINT``, ``S3_USE_HTTPS``); the status follows
  :mod:`tests.cluster.kserve`, a revision being ready when its model answers ``ready`` on
  ``/v1/models/<name>`` (the readiness probe) and failed when its container exits. A tag's URL
  is the revision pod's address (no Knative router here). Pods share the host's network
  namespace and the predictor binds 0.0.0.0:8080: one predictor pod at a time.
- **Training Operator v1** for a ``PyTorchJob`` (kubeflow/trainer v1.9.4,
  ``pkg/controller.v1/pytorch/envvar.go``, ``master.go``): pods ``<job>-master-0`` and
  ``<job>-worker-<i>``, each behind a Service of its name; ``MASTER_ADDR``/``PET_MASTER_ADDR``
  ``<job>-master-0``, port 23456, ``WORLD_SIZE``, ``RANK``/``PET_NODE_RANK``, ``PET_NNODES``,
  ``PET_NPROC_PER_NODE``, ``PYTHONUNBUFFERED``; conditions Created, Running, Succeeded or Failed
  (``PyTorchJobSucceeded``/``PyTorchJobFailed``); ``runPolicy.backoffLimit`` restarts.

Pods are real Pod objects in the API (bound to the harness node, status written from the
processes' real exit codes); their containers run through :mod:`tests.cluster.pods`.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import random
import string
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.cluster.kserve import KServeModel
from tests.cluster.kubelet import NODE, LogServer, register_node
from tests.cluster.pods import PodConfigError, PodRun
from tests.cluster.proxy import PortForward

logger = logging.getLogger(__name__)
TRAINER = ("trainer.kubeflow.org", "v1alpha1", "trainjobs")
RUNTIMES = ("trainer.kubeflow.org", "v1alpha1", "clustertrainingruntimes")
PYTORCH = ("kubeflow.org", "v1", "pytorchjobs")
KSERVE = ("serving.kserve.io", "v1beta1", "inferenceservices")
RUNTIMES_KSERVE = ("serving.kserve.io", "v1alpha1", "servingruntimes")
STORAGE_INITIALIZER = "kserve/storage-initializer:v0.21.0"
JOB_BACKOFF_LIMIT = 6  # a Kubernetes Job's default spec.backoffLimit


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge_named(base: list[dict], patch: list[dict]) -> list[dict]:
    """Strategic merge of lists keyed by ``name`` (containers, volumes, env)."""
    out = [copy.deepcopy(x) for x in base]
    for item in patch:
        current = next((x for x in out if x["name"] == item["name"]), None)
        if current is None:
            out.append(copy.deepcopy(item))
            continue
        for key, value in item.items():
            if (
                isinstance(value, list)
                and value
                and isinstance(value[0], dict)
                and "name" in value[0]
            ):
                current[key] = _merge_named(current.get(key, []), value)
            else:
                current[key] = copy.deepcopy(value)
    return out


@dataclass
class JobRun:
    kind: str  # TrainJob | PyTorchJob
    namespace: str
    name: str
    pods: list[PodRun]
    backoff_limit: int
    failures: int = 0
    done: bool = False
    succeeded: set = field(default_factory=set)


class Cluster:
    """Node, kubelet and training controllers for the tests' API server."""

    def __init__(self, api_client, workdir: Path, namespace: str, hosts: dict[str, str],
                 extra_env: dict[str, str] | None = None, image_check: str = "") -> None:  # fmt: skip
        from kubernetes import client

        self.custom, self.core = client.CustomObjectsApi(api_client), client.CoreV1Api(api_client)
        self.workdir, self.namespace = workdir, namespace
        self.hosts, self.extra_env, self.image_check = hosts, extra_env or {}, image_check
        self.jobs: dict[tuple[str, str], JobRun] = {}
        self.isvcs: dict[str, KServeModel] = {}
        self.revision_pods: dict[str, PodRun] = {}
        self.forwards: dict[str, PortForward] = {}
        self.bare: dict[str, PodRun] = {}
        self.pods: dict[str, PodRun] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._next_net = 10
        self.logs = LogServer(workdir, self._log_lookup)
        self.thread = threading.Thread(target=self._loop, daemon=True)

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> Cluster:
        self.logs.start()
        register_node(self.core, self.logs.port)
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=10)
        for forward in self.forwards.values():
            forward.stop()
        for pod in list(self.pods.values()):
            pod.cleanup()
        self.logs.stop()

    def _log_lookup(self, ns: str, name: str):
        pod = self.pods.get(name)
        if pod is None or pod.pod["metadata"]["namespace"] != ns:
            return None
        return pod.log_path, lambda: pod.proc is not None and pod.proc.poll() is None

    def kill(self, pod_name: str) -> None:
        """What a node failure or the OOM killer does to a pod's container: SIGKILL."""
        self.pods[pod_name].kill()

    # ---- the control loop ------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._reconcile()
            except Exception:  # noqa: BLE001 - a test harness: log and go on
                logger.exception("harness controller error")
            time.sleep(0.3)

    def _reconcile(self) -> None:
        self._reconcile_inference_services()
        self._reconcile_bare_pods()
        seen = set()
        for kind, (group, version, plural) in (("TrainJob", TRAINER), ("PyTorchJob", PYTORCH)):
            items = self.custom.list_namespaced_custom_object(group, version, self.namespace,
                                                              plural)["items"]  # fmt: skip
            for obj in items:
                key = (kind, obj["metadata"]["name"])
                seen.add(key)
                if key not in self.jobs:
                    self._admit(kind, obj)
        for key, job in list(self.jobs.items()):
            if key not in seen:  # deleted: the garbage collector removes its pods
                self._tear_down(job, delete_pods=True)
                del self.jobs[key]
            elif not job.done:
                self._step(job)

    def _admit(self, kind: str, obj: dict) -> None:
        name = obj["metadata"]["name"]
        try:
            pods, hosts, backoff = (self._trainjob_pods if kind == "TrainJob"
                                    else self._pytorchjob_pods)(obj)  # fmt: skip
        except PodConfigError as e:
            self.jobs[(kind, name)] = JobRun(kind, self.namespace, name, [], 0, done=True)
            self._finish(self.jobs[(kind, name)], False, "CreateContainerConfigError", str(e))
            return
        configmaps = self._configmaps()
        job = JobRun(kind, self.namespace, name, [], backoff)
        all_hosts = {**self.hosts, **hosts}
        for pod, ip in pods:
            sa = self._service_account(pod["spec"].get("serviceAccountName", "default"))
            run = PodRun(pod, ip, all_hosts, configmaps,
                         self.workdir / pod["metadata"]["name"], sa, self.extra_env,
                         self.image_check)  # fmt: skip
            run.workdir.mkdir(parents=True, exist_ok=True)
            created = self.core.create_namespaced_pod(self.namespace, pod)
            run.pod["metadata"]["uid"] = created.metadata.uid
            job.pods.append(run)
            self.pods[pod["metadata"]["name"]] = run
        self.jobs[(kind, name)] = job
        if kind == "PyTorchJob":
            self._set_job_status(job, "Created", "PyTorchJobCreated",
                                 f"PyTorchJob {name} is created.")  # fmt: skip
        for run in job.pods:
            self._start_pod(job, run)
        if kind == "PyTorchJob" and not job.done:
            self._set_job_status(job, "Running", "PyTorchJobRunning",
                                 f"PyTorchJob {name} is running.")  # fmt: skip

    def _configmaps(self) -> dict[str, dict[str, str]]:
        """The namespace's ConfigMaps as the kubelet reads them when it starts a pod."""
        return {cm.metadata.name: dict(cm.data or {})
                for cm in self.core.list_namespaced_config_map(self.namespace).items}  # fmt: skip

    def _service_account(self, name: str) -> dict:
        try:
            sa = self.core.read_namespaced_service_account(name, self.namespace)
        except Exception:  # noqa: BLE001 - no such account: no IRSA
            return {}
        return {"metadata": {"annotations": dict(sa.metadata.annotations or {})}}

    def _start_pod(self, job: JobRun, run: PodRun) -> None:
        try:
            run.start()
        except PodConfigError as e:
            self._pod_status(run, "Pending", waiting=("CreateContainerConfigError", str(e)))
            self._finish(job, False, "CreateContainerConfigError", f"{run.name}: {e}")
            return
        self._pod_status(run, "Running", running=True)

    def _step(self, job: JobRun) -> None:
        for run in job.pods:
            code = run.proc.poll() if run.proc else None
            if code is None or run.name in job.succeeded:
                continue
            if code == 0:
                job.succeeded.add(run.name)
                self._pod_status(run, "Succeeded", terminated=(0, "Completed"))
                continue
            reason = "Error" if code != 137 else "Killed"
            if (
                run.pod["spec"].get("restartPolicy") == "OnFailure"
                and job.failures < job.backoff_limit
            ):
                job.failures += 1  # the kubelet restarts the container; the Job counts it
                run.restarts += 1
                self._pod_status(run, "Running", running=True, last=(code, reason))
                run.start()
                continue
            self._pod_status(run, "Failed", terminated=(code, reason))
            first = f"{job.name}-node-0" if job.kind == "TrainJob" else run.name
            self._finish(job, False, reason, f"{run.name} exited {code} ({reason})", first)
            return
        if len(job.succeeded) == len(job.pods):
            self._finish(job, True, "", "")

    def _finish(self, job: JobRun, ok: bool, reason: str, detail: str, first: str = "") -> None:
        job.done = True
        self._tear_down(job, delete_pods=False)
        if job.kind == "TrainJob":
            if ok:
                self._set_job_status(job, "Complete", "AllJobsCompleted",
                                     "jobset completed successfully")  # fmt: skip
            else:
                self._set_job_status(job, "Failed", "FailedJobs",
                                     "jobset failed due to one or more job failures "
                                     f"(first failed job: {first or job.name + '-node-0'})")  # fmt: skip
        elif ok:
            self._set_job_status(job, "Succeeded", "PyTorchJobSucceeded",
                                 f"PyTorchJob {job.name} is successfully completed.")  # fmt: skip
        else:
            replica = "Master" if first.endswith("-master-0") else "Worker"
            self._set_job_status(job, "Failed", "PyTorchJobFailed",
                                 f"PyTorchJob {job.name} is failed because 1 {replica} "
                                 f"replica(s) failed.")  # fmt: skip
        logger.info("%s %s finished: ok=%s %s", job.kind, job.name, ok, detail)

    def _tear_down(self, job: JobRun, delete_pods: bool) -> None:
        for run in job.pods:
            if run.proc is not None and run.proc.poll() is None:
                run.kill()  # JobSet/operator: a finished job's remaining pods are stopped
                self._pod_status(run, "Failed", terminated=(137, "Killed"))
            if delete_pods:
                try:
                    self.core.delete_namespaced_pod(run.name, job.namespace)
                except Exception:  # noqa: BLE001 - already gone
                    pass
                run.cleanup()
                self.pods.pop(run.name, None)

    # ---- status writes ----------------------------------------------------------------------
    def _set_job_status(self, job: JobRun, ctype: str, reason: str, message: str) -> None:
        group, version, plural = TRAINER if job.kind == "TrainJob" else PYTORCH
        current = self.custom.get_namespaced_custom_object(group, version, job.namespace, plural,
                                                           job.name)  # fmt: skip
        conditions = [c for c in (current.get("status") or {}).get("conditions") or []
                      if c["type"] != ctype]  # fmt: skip
        if job.kind == "PyTorchJob" and ctype in ("Succeeded", "Failed"):
            for c in conditions:
                if c["type"] == "Running":
                    c["status"] = "False"
        cond = {"type": ctype, "status": "True", "reason": reason, "message": message,
                "lastTransitionTime": _now()}  # fmt: skip
        if job.kind == "PyTorchJob":
            cond["lastUpdateTime"] = cond["lastTransitionTime"]
        current.setdefault("status", {})["conditions"] = [*conditions, cond]
        if job.kind == "TrainJob":
            failed = int(ctype == "Failed")
            current["status"]["jobsStatus"] = [{"name": "node", "ready": 0, "active": 0,
                                                "succeeded": int(ctype == "Complete"),
                                                "failed": failed, "suspended": 0}]  # fmt: skip
        self.custom.replace_namespaced_custom_object_status(group, version, job.namespace, plural,
                                                            job.name, current)  # fmt: skip

    def _pod_status(self, run: PodRun, phase: str, running: bool = False,
                    terminated: tuple | None = None, waiting: tuple | None = None,
                    last: tuple | None = None) -> None:  # fmt: skip
        state: dict = {}
        if running:
            state = {"running": {"startedAt": _now()}}
        elif terminated:
            state = {"terminated": {"exitCode": terminated[0], "reason": terminated[1],
                                    "finishedAt": _now()}}  # fmt: skip
        elif waiting:
            state = {"waiting": {"reason": waiting[0], "message": waiting[1]}}
        c = run.container
        status = {"name": c["name"], "image": c["image"], "imageID": "", "ready": running,
                  "restartCount": run.restarts, "state": state}  # fmt: skip
        if last:
            run.last_state = {"terminated": {"exitCode": last[0], "reason": last[1],
                                             "finishedAt": _now()}}  # fmt: skip
        if run.last_state:
            status["lastState"] = run.last_state
        ns = run.pod["metadata"]["namespace"]
        try:  # the whole status, as the kubelet writes it (no merge with the previous one)
            pod = self.core.read_namespaced_pod(run.name, ns)
            pod.status = {"phase": phase, "podIP": run.ip, "hostIP": "127.0.0.1",
                          "containerStatuses": [status]}  # fmt: skip
            self.core.replace_namespaced_pod_status(run.name, ns, pod)
        except Exception:  # noqa: BLE001 - the pod may be gone with its job
            logger.debug("pod status of %s not written", run.name)

    # ---- pods of each kind ------------------------------------------------------------------
    def _ip_block(self) -> int:
        with self._lock:
            self._next_net += 1
            return self._next_net

    def _trainjob_pods(self, job: dict) -> tuple[list, dict, int]:
        name, spec = job["metadata"]["name"], job["spec"]
        ref = spec["runtimeRef"]
        if ref.get("kind", "ClusterTrainingRuntime") != "ClusterTrainingRuntime":
            raise PodConfigError(f"runtime kind {ref.get('kind')} is not played by the harness")
        runtime = self.custom.get_cluster_custom_object(*RUNTIMES, ref["name"])
        (rjob,) = [j for j in runtime["spec"]["template"]["spec"]["replicatedJobs"]
                   if j["name"] == "node"]  # fmt: skip
        template = copy.deepcopy(rjob["template"]["spec"]["template"])
        pod_spec = template["spec"]
        trainer = spec.get("trainer", {})
        container = next(c for c in pod_spec["containers"] if c["name"] == "node")
        for key in ("image", "command", "args"):
            if key in trainer:
                container[key] = trainer[key]
        container["env"] = _merge_named(container.get("env", []), trainer.get("env", []))
        if "resourcesPerNode" in trainer:
            container["resources"] = trainer["resourcesPerNode"]
        for patch in spec.get("runtimePatches", []):
            for pj in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
                if pj["name"] != "node":
                    raise PodConfigError(f"runtimePatches: no replicated job {pj['name']}")
                tpl = pj["template"]["spec"]["template"]
                for key, value in (tpl.get("metadata") or {}).items():
                    template.setdefault("metadata", {}).setdefault(key, {}).update(value)
                for key, value in tpl.get("spec", {}).items():
                    if key in ("containers", "volumes", "initContainers"):
                        for c in value if key == "containers" else []:
                            if c["name"] == "node" and "env" in c:
                                raise PodConfigError("runtimePatches may not set env of node")
                        pod_spec[key] = _merge_named(pod_spec.get(key, []), value)
                    else:
                        pod_spec[key] = copy.deepcopy(value)
        container = next(c for c in pod_spec["containers"] if c["name"] == "node")
        nodes = int(trainer.get("numNodes") or runtime["spec"]["mlPolicy"].get("numNodes", 1))
        nproc = trainer.get("numProcPerNode")
        if nproc is None:
            nproc = max(1, int(float(str(container.get("resources", {}).get("requests", {})
                                         .get("cpu", "1")).rstrip("m"))))  # fmt: skip
        reserved = {"PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR",
                    "PET_MASTER_PORT"}  # fmt: skip
        if reserved & {e["name"] for e in trainer.get("env", [])}:
            raise PodConfigError("must not have reserved envs")
        container["env"] = _merge_named(container.get("env", []), [
            {"name": "PET_NNODES", "value": str(nodes)},
            {"name": "PET_NPROC_PER_NODE", "value": str(nproc)},
            {"name": "PET_NODE_RANK", "valueFrom": {"fieldRef": {
                "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}},
            {"name": "PET_MASTER_ADDR", "value": f"{name}-node-0-0.{name}"},
            {"name": "PET_MASTER_PORT", "value": "29500"},
        ])  # fmt: skip
        pod_spec.setdefault("restartPolicy", "OnFailure")  # JobSet webhook default
        net = self._ip_block()
        pods, hosts = [], {}
        for i in range(nodes):
            ip = f"127.0.{net}.{i + 2}"
            host = f"{name}-node-0-{i}"
            suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
            pod = {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "name": f"{host}-{suffix}", "namespace": self.namespace,
                    "labels": {**(template.get("metadata") or {}).get("labels", {}),
                               **rjob["template"].get("metadata", {}).get("labels", {}),
                               "jobset.sigs.k8s.io/jobset-name": name,
                               "jobset.sigs.k8s.io/replicatedjob-name": "node",
                               "jobset.sigs.k8s.io/job-index": "0",
                               "batch.kubernetes.io/job-completion-index": str(i)},
                    "annotations": {"batch.kubernetes.io/job-completion-index": str(i)},
                },
                "spec": {**copy.deepcopy(pod_spec), "hostname": host, "subdomain": name,
                         "nodeName": NODE},
            }  # fmt: skip
            pods.append((pod, ip))
            for alias in (host, f"{host}.{name}", f"{host}.{name}.{self.namespace}.svc",
                          f"{host}.{name}.{self.namespace}.svc.cluster.local"):  # fmt: skip
                hosts[alias] = ip
        return pods, hosts, JOB_BACKOFF_LIMIT

    def _pytorchjob_pods(self, job: dict) -> tuple[list, dict, int]:
        name, spec = job["metadata"]["name"], job["spec"]
        replicas = spec["pytorchReplicaSpecs"]
        roles = [("master", 0, replicas["Master"])] + [
            ("worker", i, replicas["Worker"]) for i in range(replicas.get("Worker", {}).get("replicas", 0))
        ]  # fmt: skip
        total = len(roles)
        nproc = str(spec.get("nprocPerNode", "auto"))
        per_node = int(nproc) if nproc.isdigit() else 1
        net = self._ip_block()
        pods, hosts = [], {}
        for n, (role, index, replica) in enumerate(roles):
            pod_name = f"{name}-{role}-{index}"
            ip = f"127.0.{net}.{n + 2}"
            template = copy.deepcopy(replica["template"])
            pod_spec = template["spec"]
            rank = 0 if role == "master" else index + 1
            env = [
                {"name": "PYTHONUNBUFFERED", "value": "1"},
                {"name": "MASTER_PORT", "value": "23456"},
                {"name": "PET_MASTER_PORT", "value": "23456"},
                {"name": "MASTER_ADDR", "value": f"{name}-master-0"},
                {"name": "PET_MASTER_ADDR", "value": f"{name}-master-0"},
                {"name": "WORLD_SIZE", "value": str(total * per_node)},
                {"name": "RANK", "value": str(rank)},
                {"name": "PET_NODE_RANK", "value": str(rank)},
                {"name": "PET_NPROC_PER_NODE", "value": nproc},
                {"name": "PET_NNODES", "value": str(total)},
            ]
            for c in pod_spec["containers"]:
                c["env"] = _merge_named(c.get("env", []), env)
            pod_spec["restartPolicy"] = replica.get("restartPolicy", "OnFailure")
            pod_spec["hostname"], pod_spec["nodeName"] = pod_name, NODE
            pod = {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "name": pod_name, "namespace": self.namespace,
                    "labels": {**(template.get("metadata") or {}).get("labels", {}),
                               "training.kubeflow.org/job-name": name,
                               "training.kubeflow.org/replica-type": role,
                               "training.kubeflow.org/replica-index": str(index)},
                },
                "spec": pod_spec,
            }  # fmt: skip
            pods.append((pod, ip))
            for alias in (pod_name, f"{pod_name}.{self.namespace}.svc",
                          f"{pod_name}.{self.namespace}.svc.cluster.local"):  # fmt: skip
                hosts[alias] = ip
        backoff = int(spec.get("runPolicy", {}).get("backoffLimit", JOB_BACKOFF_LIMIT))
        return pods, hosts, backoff

    # ---- InferenceServices (KServe Serverless) ---------------------------------------------
    def _reconcile_inference_services(self) -> None:
        items = self.custom.list_namespaced_custom_object(*KSERVE[:2], self.namespace,
                                                          KSERVE[2])["items"]  # fmt: skip
        for gone in set(self.isvcs) - {o["metadata"]["name"] for o in items}:
            model = self.isvcs.pop(gone)  # deleted: its revisions' pods go with it
            for revision, _ in model.revisions:
                run = self.revision_pods.pop(revision, None)
                if run is not None:
                    forward = self.forwards.pop(run.ip, None)
                    if forward:
                        forward.stop()
                    run.cleanup()
                    self.pods.pop(run.name, None)
                    try:
                        self.core.delete_namespaced_pod(run.name, self.namespace)
                    except Exception:  # noqa: BLE001 - already gone
                        pass
        for obj in items:
            name = obj["metadata"]["name"]
            model = self.isvcs.setdefault(name, KServeModel(name, self.namespace))
            before = len(model.revisions)
            model.observe(obj)
            if len(model.revisions) > before:
                revision, uri = model.revisions[-1]
                self._start_revision(obj, revision, uri, model)
            if model.phase == "starting":
                revision, uri = model.revisions[-1]
                run = self.revision_pods.get(revision)
                state = self._revision_state(run, name)
                if state == "pending":
                    continue  # Knative keeps the configuration Unknown meanwhile
                if state == "failed":
                    model.healthy[uri] = False
            obj["status"] = model.tick()
            self._route(name, model)
            try:
                self.custom.replace_namespaced_custom_object_status(
                    *KSERVE[:2], self.namespace, KSERVE[2], name, obj
                )
            except Exception:  # noqa: BLE001 - a newer spec came in: next round
                logger.debug("status of %s not written", name)

    def _route(self, name: str, model: KServeModel) -> None:
        """The predictor's in-cluster Service name to the rolled-out revision's pod, port 80 to
        8080 (Knative's ``<name>-predictor`` Service, its activator and queue-proxy)."""
        run = self.revision_pods.get(model.rolled)
        if run is None:
            return
        for host in (f"{name}-predictor.{self.namespace}.svc.cluster.local",
                     f"{name}-predictor.{self.namespace}.svc"):  # fmt: skip
            self.hosts[host] = run.ip
        if run.ip not in self.forwards:
            self.forwards[run.ip] = PortForward(run.ip, 80, 8080)

    def _revision_state(self, run: PodRun | None, name: str) -> str:
        import urllib.request

        if run is None or run.proc is None:
            return "failed"
        if run.proc.poll() is not None:
            return "failed"
        try:
            with urllib.request.urlopen(f"http://{run.ip}:8080/v1/models/{name}", timeout=1) as r:  # noqa: S310
                return "ready" if json.loads(r.read()).get("ready") else "pending"
        except (OSError, ValueError):
            return "pending"

    def _start_revision(self, isvc: dict, revision: str, uri: str, model: KServeModel) -> None:
        pod = self._predictor_pod(isvc, revision, uri)
        ip = f"127.0.{self._ip_block()}.2"
        configmaps = self._configmaps()
        sa = self._service_account(pod["spec"].get("serviceAccountName", "default"))
        run = PodRun(pod, ip, dict(self.hosts), configmaps, self.workdir / pod["metadata"]["name"],
                     sa, self.extra_env, self.image_check)  # fmt: skip
        run.workdir.mkdir(parents=True, exist_ok=True)
        self.core.create_namespaced_pod(self.namespace, pod)
        self.pods[run.name] = self.revision_pods[revision] = run
        model.urls[revision] = f"http://{ip}:8080"
        failed = run.run_init_containers()
        if failed:
            self._pod_status(
                run, "Pending", waiting=("Init:Error", f"{failed[0]} exited {failed[1]}")
            )
            return
        run.start()
        self._pod_status(run, "Running", running=True)

    def _predictor_pod(self, isvc: dict, revision: str, uri: str) -> dict:
        name, predictor = isvc["metadata"]["name"], isvc["spec"]["predictor"]
        model = predictor["model"]
        runtime = self.custom.get_namespaced_custom_object(
            *RUNTIMES_KSERVE[:2], self.namespace, RUNTIMES_KSERVE[2], model["runtime"]
        )
        container = copy.deepcopy(runtime["spec"]["containers"][0])
        container["args"] = [a.replace("{{.Name}}", name) for a in container.get("args", [])]
        if "resources" in model:
            container["resources"] = model["resources"]
        mount = {"name": "kserve-provision-location", "mountPath": "/mnt/models"}
        container["volumeMounts"] = [
            *container.get("volumeMounts", []),
            {**mount, "readOnly": True},
        ]
        sa = self._service_account(predictor.get("serviceAccountName", "default"))
        notes = sa.get("metadata", {}).get("annotations", {})
        init_env = []
        endpoint = notes.get("serving.kserve.io/s3-endpoint")
        if endpoint:  # BuildS3EnvVars: "0" means http
            scheme = "http" if notes.get("serving.kserve.io/s3-usehttps") == "0" else "https"
            init_env = [{"name": "S3_ENDPOINT", "value": endpoint},
                        {"name": "S3_USE_HTTPS", "value": "0" if scheme == "http" else "1"},
                        {"name": "AWS_ENDPOINT_URL", "value": f"{scheme}://{endpoint}"}]  # fmt: skip
        init = {
            "name": "storage-initializer", "image": STORAGE_INITIALIZER,
            "args": [uri, "/mnt/models"], "env": init_env, "volumeMounts": [mount],
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "securityContext": copy.deepcopy(container.get("securityContext", {})),
            "resources": {"requests": {"cpu": "100m", "memory": "100Mi"},
                          "limits": {"cpu": "1", "memory": "1Gi"}},
        }  # fmt: skip
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        return {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": f"{revision}-deployment-{suffix}", "namespace": self.namespace,
                "labels": {"serving.kserve.io/inferenceservice": name, "component": "predictor",
                           "serving.knative.dev/revision": revision},
                "annotations": {"internal.serving.kserve.io/storage-initializer-sourceuri": uri},
            },
            "spec": {
                "serviceAccountName": predictor.get("serviceAccountName", "default"),
                "securityContext": copy.deepcopy(predictor.get("securityContext", {})),
                "initContainers": [init], "containers": [container], "nodeName": NODE,
                "volumes": [*copy.deepcopy(runtime["spec"].get("volumes", [])),
                            {"name": "kserve-provision-location", "emptyDir": {}}],
            },
        }  # fmt: skip

    # ---- Pods created directly (a helm test hook): the scheduler binds, the kubelet runs -----
    def _reconcile_bare_pods(self) -> None:
        for pod in self.core.list_namespaced_pod(self.namespace).items:
            name = pod.metadata.name
            if pod.spec.node_name is None and name not in self.bare:
                self.core.create_namespaced_pod_binding(name, self.namespace, {
                    "apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": NODE}},
                    _preload_content=False)  # fmt: skip
                obj = self.core.api_client.sanitize_for_serialization(pod)
                configmaps = self._configmaps()
                sa = self._service_account(obj["spec"].get("serviceAccountName", "default"))
                run = PodRun(obj, f"127.0.{self._ip_block()}.2", self.hosts, configmaps,
                             self.workdir / name, sa, self.extra_env, self.image_check)  # fmt: skip
                run.workdir.mkdir(parents=True, exist_ok=True)
                self.bare[name] = self.pods[name] = run
                try:
                    run.start()
                except PodConfigError as e:
                    self._pod_status(run, "Pending", waiting=("CreateContainerConfigError", str(e)))
                    continue
                self._pod_status(run, "Running", running=True)
        for run in list(self.bare.values()):
            code = run.proc.poll() if run.proc else None
            if code is not None and not getattr(run, "reported", False):
                run.reported = True
                self._pod_status(run, "Succeeded" if code == 0 else "Failed",
                                 terminated=(code, "Completed" if code == 0 else "Error"))  # fmt: skip
