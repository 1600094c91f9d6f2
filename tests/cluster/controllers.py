"""The controllers no binary exists for here, acting on the real API server (test-only code).

The cluster in processes (:class:`Cluster`) runs the upstream kube-controller-manager and
kube-scheduler (:mod:`tests.cluster.control`) and plays only what has no upstream binary here,
each following its project's documented behaviour, by writing the objects that project writes:

- **Kubeflow Trainer v2 + JobSet + Indexed Job** for a ``TrainJob`` (kubeflow/trainer v2.3.0):
  the ``ClusterTrainingRuntime`` it references is read from the API; the trainer's image,
  command, args, env and ``resourcesPerNode`` go into the runtime's ``node`` container
  (``pkg/runtime/framework/plugins/jobset/builder.go``), ``runtimePatches`` are merged onto the
  pod (``pkg/runtime/core/trainingruntime.go``); the torch plugin adds ``PET_NNODES``,
  ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK`` (from the pod's job-completion-index annotation),
  ``PET_MASTER_ADDR=<job>-node-0-0.<job>`` and ``PET_MASTER_PORT=29500``
  (``pkg/runtime/framework/plugins/torch/torch.go``). JobSet makes the headless Service ``<job>``
  (``publishNotReadyAddresses``) and pods named and labelled as an Indexed Job of JobSet
  ``<job>`` makes them (hostname ``<job>-node-0-<i>``, subdomain ``<job>``; kubernetes-sigs/jobset
  v0.12.0 ``pkg/controllers/jobset_controller.go``), so ``<job>-node-0-0.<job>`` resolves through
  the cluster DNS to the pod's own address. JobSet's webhook defaults ``restartPolicy`` to
  OnFailure (``pkg/webhooks/jobset_webhook.go``): the kubelet restarts a failed container in
  place, and the Job fails once its pods' restarts pass ``backoffLimit`` (default 6; kubernetes
  ``pkg/controller/job/job_controller.go``, which then deletes the Job's active pods); the
  TrainJob copies the JobSet's ``Failed`` condition (``FailedJobs``) or ``Complete``
  (``AllJobsCompleted``). The upstream Job controller of v1.20 has no Indexed Jobs (alpha in
  1.21), so it is switched off and this plays it; the intermediate JobSet and Job objects are
  not written (no CRD for JobSet here): the pods and the Service are owned by the TrainJob, and
  the upstream garbage collector removes them with it.
- **Training Operator v1** for a ``PyTorchJob`` (kubeflow/trainer v1.9.4,
  ``pkg/controller.v1/pytorch/envvar.go``, ``master.go``): pods ``<job>-master-0`` and
  ``<job>-worker-<i>``, each behind a headless Service of its name; ``MASTER_ADDR``/
  ``PET_MASTER_ADDR`` ``<job>-master-0``, port 23456, ``WORLD_SIZE``, ``RANK``/``PET_NODE_RANK``,
  ``PET_NNODES``, ``PET_NPROC_PER_NODE``, ``PYTHONUNBUFFERED``; conditions Created, Running,
  Succeeded or Failed; ``runPolicy.backoffLimit`` restarts; ``cleanPodPolicy`` on finish.
- **KServe + Knative** for an ``InferenceService``: see :mod:`tests.cluster.serving`.

Pods are created unbound: the real scheduler binds them to the harness node, whose kubelet
(:mod:`tests.cluster.kubelet`) runs them.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tests.cluster.kubelet import Kubelet
from tests.cluster.network import PodNetwork
from tests.cluster.pods import PodConfigError
from tests.cluster.services import ServiceNetwork

logger = logging.getLogger(__name__)
TRAINER = ("trainer.kubeflow.org", "v1alpha1", "trainjobs")
RUNTIMES = ("trainer.kubeflow.org", "v1alpha1", "clustertrainingruntimes")
PYTORCH = ("kubeflow.org", "v1", "pytorchjobs")
JOB_BACKOFF_LIMIT = 6  # a Kubernetes Job's default spec.backoffLimit


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def owner_ref(obj: dict) -> dict:
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}  # fmt: skip


def merge_named(base: list[dict], patch: list[dict]) -> list[dict]:
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
                current[key] = merge_named(current.get(key, []), value)
            else:
                current[key] = copy.deepcopy(value)
    return out


@dataclass
class JobRun:
    kind: str  # TrainJob | PyTorchJob
    namespace: str
    name: str
    selector: str
    backoff_limit: int
    clean_pod_policy: str = "None"
    done: bool = False


class TrainingControllers:
    """Trainer v2 (TrainJob) and Training Operator v1 (PyTorchJob), in every namespace."""

    def __init__(self, api_client) -> None:  # noqa: ANN001
        from kubernetes import client

        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.jobs: dict[tuple[str, str, str], JobRun] = {}

    def sync(self) -> None:
        seen = set()
        for kind, (group, version, plural) in (("TrainJob", TRAINER), ("PyTorchJob", PYTORCH)):
            for obj in self.custom.list_cluster_custom_object(group, version, plural)["items"]:
                key = (kind, obj["metadata"]["namespace"], obj["metadata"]["name"])
                seen.add(key)
                if key not in self.jobs:
                    self._admit(kind, obj)
        for key, job in list(self.jobs.items()):
            if key not in seen:  # deleted: the garbage collector removes its pods
                del self.jobs[key]
            elif not job.done:
                self._step(job)

    # ---- admission ---------------------------------------------------------------------------
    def _admit(self, kind: str, obj: dict) -> None:
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        build = self._trainjob if kind == "TrainJob" else self._pytorchjob
        try:
            pods, services, job = build(obj)
        except PodConfigError as e:
            job = JobRun(kind, ns, name, "", 0, done=True)
            self.jobs[(kind, ns, name)] = job
            self._finish(job, False, f"{e}")
            return
        self.jobs[(kind, ns, name)] = job
        for svc in services:
            svc["metadata"]["ownerReferences"] = [owner_ref(obj)]
            self.core.create_namespaced_service(ns, svc)
        for pod in pods:
            pod["metadata"]["ownerReferences"] = [owner_ref(obj)]
            self.core.create_namespaced_pod(ns, pod)
        if kind == "PyTorchJob":
            self._set_status(job, "Created", "PyTorchJobCreated", f"PyTorchJob {name} is created.")
            self._set_status(job, "Running", "PyTorchJobRunning", f"PyTorchJob {name} is running.")

    def _trainjob(self, job: dict) -> tuple[list, list, JobRun]:
        ns, name, spec = job["metadata"]["namespace"], job["metadata"]["name"], job["spec"]
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
        container["env"] = merge_named(container.get("env", []), trainer.get("env", []))
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
                        pod_spec[key] = merge_named(pod_spec.get(key, []), value)
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
        container["env"] = merge_named(container.get("env", []), [
            {"name": "PET_NNODES", "value": str(nodes)},
            {"name": "PET_NPROC_PER_NODE", "value": str(nproc)},
            {"name": "PET_NODE_RANK", "valueFrom": {"fieldRef": {
                "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}},
            {"name": "PET_MASTER_ADDR", "value": f"{name}-node-0-0.{name}"},
            {"name": "PET_MASTER_PORT", "value": "29500"},
        ])  # fmt: skip
        pod_spec.setdefault("restartPolicy", "OnFailure")  # JobSet webhook default
        labels = {"jobset.sigs.k8s.io/jobset-name": name,
                  "jobset.sigs.k8s.io/replicatedjob-name": "node"}  # fmt: skip
        service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
                   "spec": {"clusterIP": "None", "selector": {"jobset.sigs.k8s.io/jobset-name": name},
                            "publishNotReadyAddresses": True}}  # fmt: skip
        pods = []
        for i in range(nodes):
            host = f"{name}-node-0-{i}"
            pods.append({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "generateName": f"{host}-", "namespace": ns,
                    "labels": {**(template.get("metadata") or {}).get("labels", {}),
                               **rjob["template"].get("metadata", {}).get("labels", {}),
                               **labels, "jobset.sigs.k8s.io/job-index": "0",
                               "batch.kubernetes.io/job-completion-index": str(i)},
                    "annotations": {"batch.kubernetes.io/job-completion-index": str(i)},
                },
                "spec": {**copy.deepcopy(pod_spec), "hostname": host, "subdomain": name},
            })  # fmt: skip
        selector = f"jobset.sigs.k8s.io/jobset-name={name}"
        return pods, [service], JobRun("TrainJob", ns, name, selector, JOB_BACKOFF_LIMIT)

    def _pytorchjob(self, job: dict) -> tuple[list, list, JobRun]:
        ns, name, spec = job["metadata"]["namespace"], job["metadata"]["name"], job["spec"]
        replicas = spec["pytorchReplicaSpecs"]
        roles = [("master", 0, replicas["Master"])] + [
            ("worker", i, replicas["Worker"]) for i in range(replicas.get("Worker", {}).get("replicas", 0))
        ]  # fmt: skip
        nproc = str(spec.get("nprocPerNode", "auto"))
        per_node = int(nproc) if nproc.isdigit() else 1
        pods, services = [], []
        for role, index, replica in roles:
            pod_name = f"{name}-{role}-{index}"
            template = copy.deepcopy(replica["template"])
            pod_spec = template["spec"]
            rank = 0 if role == "master" else index + 1
            env = [
                {"name": "PYTHONUNBUFFERED", "value": "1"},
                {"name": "MASTER_PORT", "value": "23456"},
                {"name": "PET_MASTER_PORT", "value": "23456"},
                {"name": "MASTER_ADDR", "value": f"{name}-master-0"},
                {"name": "PET_MASTER_ADDR", "value": f"{name}-master-0"},
                {"name": "WORLD_SIZE", "value": str(len(roles) * per_node)},
                {"name": "RANK", "value": str(rank)},
                {"name": "PET_NODE_RANK", "value": str(rank)},
                {"name": "PET_NPROC_PER_NODE", "value": nproc},
                {"name": "PET_NNODES", "value": str(len(roles))},
            ]
            for c in pod_spec["containers"]:
                c["env"] = merge_named(c.get("env", []), env)
            pod_spec["restartPolicy"] = replica.get("restartPolicy", "OnFailure")
            labels = {"training.kubeflow.org/job-name": name,
                      "training.kubeflow.org/replica-type": role,
                      "training.kubeflow.org/replica-index": str(index)}  # fmt: skip
            pods.append({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod_name, "namespace": ns,
                             "labels": {**(template.get("metadata") or {}).get("labels", {}), **labels}},
                "spec": pod_spec,
            })  # fmt: skip
            # pkg/controller.v1/common/service.go: a headless Service per replica, port 23456
            services.append({"apiVersion": "v1", "kind": "Service",
                             "metadata": {"name": pod_name, "namespace": ns, "labels": labels},
                             "spec": {"clusterIP": "None", "selector": labels,
                                      "ports": [{"name": "pytorchjob-port", "port": 23456}]}})  # fmt: skip
        run_policy = spec.get("runPolicy", {})
        backoff = int(run_policy.get("backoffLimit", JOB_BACKOFF_LIMIT))
        selector = f"training.kubeflow.org/job-name={name}"
        return pods, services, JobRun("PyTorchJob", ns, name, selector, backoff,
                                      run_policy.get("cleanPodPolicy", "None"))  # fmt: skip

    # ---- progress ----------------------------------------------------------------------------
    def _step(self, job: JobRun) -> None:
        pods = self.core.list_namespaced_pod(job.namespace, label_selector=job.selector).items
        if not pods:
            return
        restarts = sum(s.restart_count for p in pods for s in (p.status.container_statuses or []))
        failed = [p for p in pods if p.status.phase == "Failed"]
        if failed or restarts > job.backoff_limit:
            first = failed[0].metadata.name if failed else ""
            why = (f"{first} failed" if failed else
                   f"{restarts} container restarts passed backoffLimit {job.backoff_limit}")  # fmt: skip
            self._finish(job, False, why, first, pods)
        elif all(p.status.phase == "Succeeded" for p in pods):
            self._finish(job, True, "", "", pods)

    def _finish(self, job: JobRun, ok: bool, detail: str, first: str = "", pods=()) -> None:  # noqa: ANN001
        job.done = True
        if job.kind == "TrainJob":
            if not ok:  # the Job controller deletes a failed Job's active pods
                self._delete_pods(
                    job, pods, lambda p: p.status.phase not in ("Succeeded", "Failed")
                )
            if ok:
                self._set_status(
                    job, "Complete", "AllJobsCompleted", "jobset completed successfully"
                )
            else:
                self._set_status(job, "Failed", "FailedJobs",
                                 "jobset failed due to one or more job failures "
                                 f"(first failed job: {job.name}-node-0)")  # fmt: skip
        else:
            policy = job.clean_pod_policy
            if policy in ("Running", "All"):
                self._delete_pods(
                    job, pods, lambda p: policy == "All" or p.status.phase == "Running"
                )
            if ok:
                self._set_status(job, "Succeeded", "PyTorchJobSucceeded",
                                 f"PyTorchJob {job.name} is successfully completed.")  # fmt: skip
            else:
                replica = "Worker" if "-worker-" in first else "Master"
                self._set_status(job, "Failed", "PyTorchJobFailed",
                                 f"PyTorchJob {job.name} is failed because 1 {replica} "
                                 "replica(s) failed.")  # fmt: skip
        logger.info("%s %s finished: ok=%s %s", job.kind, job.name, ok, detail)

    def _delete_pods(self, job: JobRun, pods, which) -> None:  # noqa: ANN001
        for pod in pods:
            if which(pod):
                try:
                    self.core.delete_namespaced_pod(pod.metadata.name, job.namespace)
                except Exception:  # noqa: BLE001 - already gone
                    pass

    def _set_status(self, job: JobRun, ctype: str, reason: str, message: str) -> None:
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
                "lastTransitionTime": now()}  # fmt: skip
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


class Cluster:
    """The cluster in processes: network, DNS, kube-proxy, kubelet and the stand-in controllers.

    The upstream controllers (kube-controller-manager, kube-scheduler) run beside it
    (:func:`tests.cluster.control.start_controllers`).
    """

    def __init__(self, api_client, workdir: Path, network: PodNetwork,  # noqa: ANN001
                 extra_env: dict[str, str] | None = None, image_check: str = "") -> None:  # fmt: skip
        from kubernetes import client

        from tests.cluster.dns import ClusterDNS
        from tests.cluster.serving import ServingControllers

        self.api_client, self.network = api_client, network
        self.core = client.CoreV1Api(api_client)
        self.services = ServiceNetwork(self.core, network)
        self.dns = ClusterDNS(network.gateway, self.services.lookup)
        self.kubelet = Kubelet(api_client, workdir, network, network.gateway, extra_env,
                               image_check)  # fmt: skip
        self.training = TrainingControllers(api_client)
        self.serving = ServingControllers(api_client, self.services, network)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> Cluster:
        self.services.sync()
        self.dns.start()
        self.kubelet.start()
        self.serving.start()
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=10)
        self.serving.stop()
        self.kubelet.stop()
        self.dns.stop()
        self.services.stop()

    def kill(self, pod_name: str) -> None:
        self.kubelet.kill(pod_name)

    @property
    def pods(self) -> dict:
        return {run.name: run for run in list(self.kubelet.pods.values())}

    def _loop(self) -> None:
        while not self._stop.is_set():
            for part in (self.services, self.training, self.serving):
                try:
                    part.sync()
                except Exception:  # noqa: BLE001 - a test harness: log and go on
                    logger.exception("harness controller error in %s", type(part).__name__)
            time.sleep(0.3)
