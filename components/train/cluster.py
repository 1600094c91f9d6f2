"""Multi-node training on Kubernetes: one job object, created, watched, logged, cleaned up.

Two launchers render the same :class:`ClusterSpec` (``components/train/jobspec.py``, the leaf
module all three share): Kubeflow Trainer v2's ``TrainJob``
(``components/train/trainjob.py``, the default) and the legacy Training Operator v1
``PyTorchJob`` (``components/train/pytorchjob.py``). :func:`run_job` is the part they share:

- **create or adopt.** The job is named after the run id, so a retried pipeline task meets its
  own job: a running one is followed again, a finished one is reused (Complete) or deleted and
  created anew (Failed: the new pods resume from the run's last S3 checkpoint).
- **follow** the job with a watch on its own object (no polling interval), to the launcher's
  terminal condition; a Failed job raises with the condition's own reason and message.
- **stream rank 0's log** (the first node's pod) into this task's log while the job runs.
- **clean up** by policy: ``delete-on-success`` (default: a failed job and its pods stay for
  ``kubectl describe`` and ``kubectl logs``; the retry deletes it), ``keep`` or ``delete``.

Nothing pod-local crosses a pod boundary: the caller passes ``s3://`` data, output and
checkpoint URIs (``components/train/step.py``), settings reach the pods from the platform
ConfigMap, and S3 credentials from the training service account (IRSA on EKS).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Protocol

from components.common.errors import ConfigurationError, PlatformError

# The job's spec and naming live in a leaf module that both launchers import; named here too,
# where callers have always found them.
from components.train.jobspec import ClusterSpec, job_name
from components.train.pytorchjob import PyTorchJobKind
from components.train.trainjob import TrainJobKind

logger = logging.getLogger(__name__)

__all__ = ["ClusterSpec", "JobRunner", "job_name", "kind_for", "run_cluster_job"]
LAUNCHERS = ("trainjob", "pytorchjob")
JOB_POLICIES = ("delete-on-success", "keep", "delete")


class JobKind(Protocol):
    """One launcher's API: where its objects live, how they end, which pod is rank 0."""

    group: str
    version: str
    plural: str
    kind: str
    container: str

    def render(self, spec: ClusterSpec) -> dict: ...

    def terminal(self, job: dict) -> tuple[str | None, str]:
        """("Succeeded" | "Failed" | None, the condition's reason and message)."""
        ...

    def rank0_selector(self, name: str) -> str: ...

    def pods_selector(self, name: str) -> str: ...


def kind_for(launcher: str) -> JobKind:
    if launcher == "trainjob":
        return TrainJobKind()
    if launcher == "pytorchjob":
        return PyTorchJobKind()
    raise ConfigurationError(f"launcher {launcher!r} is not one of: {', '.join(LAUNCHERS)}")


def kube_clients() -> tuple[Any, Any]:
    """CustomObjectsApi and CoreV1Api from the pod's service account, else the kubeconfig."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            # KUBECONFIG read now: the client library reads it once, at import
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
        except (config.ConfigException, OSError) as e:
            raise ConfigurationError(
                f"no Kubernetes API to launch a multi-node job on (not in a pod, no kubeconfig): "
                f"{e}"
            ) from e
    return client.CustomObjectsApi(), client.CoreV1Api()


class JobRunner:
    """Create (or adopt) one job, follow it to its end, stream rank 0's log, clean up."""

    def __init__(self, kind: JobKind, api: Any, core: Any = None, policy: str = JOB_POLICIES[0],
                 timeout_s: float = 24 * 3600) -> None:  # fmt: skip
        if policy not in JOB_POLICIES:
            raise ConfigurationError(
                f"job_policy {policy!r} is not one of: {', '.join(JOB_POLICIES)}"
            )
        self.kind, self.api, self.core = kind, api, core
        self.policy, self.timeout_s = policy, timeout_s

    def _args(self, ns: str) -> tuple:
        return self.kind.group, self.kind.version, ns, self.kind.plural

    def run(self, job: dict) -> str:
        """Run ``job`` to Succeeded (its message is returned) or raise with the failure."""
        ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
        what = f"{self.kind.kind} {ns}/{name}"
        current = self._create_or_adopt(job, what)
        stop = threading.Event()
        logs = threading.Thread(target=self._stream_rank0, args=(ns, name, stop), daemon=True)
        logs.start()
        try:
            state, message = self._follow(current, what)
        finally:
            stop.set()
            logs.join(timeout=10)
        if state == "Succeeded":
            if self.policy != "keep":
                self._delete(ns, name, what)
            return message or "Succeeded"
        message += self._failed_pods(ns, name)
        if self.policy == "delete":
            self._delete(ns, name, what)
        kept = (
            ""
            if self.policy == "delete"
            else (f" (kept for inspection: kubectl -n {ns} describe {self.kind.plural} {name})")
        )
        raise PlatformError(f"{what} failed: {message}{kept}")

    def _create_or_adopt(self, job: dict, what: str) -> dict:
        from kubernetes.client.exceptions import ApiException

        ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
        try:
            created = self.api.create_namespaced_custom_object(*self._args(ns), job)
            logger.info("created %s", what)
            return created
        except ApiException as e:
            if e.status != 409:
                raise PlatformError(f"cannot create {what}: {e.status} {e.reason}: {e.body}") from e
        existing = self.api.get_namespaced_custom_object(*self._args(ns), name)
        state, message = self.kind.terminal(existing)
        if state == "Failed":
            # A retry of the pipeline task: the new pods resume from the run's last checkpoint.
            logger.info("%s exists and failed (%s): deleting it and starting again", what, message)
            self._delete(ns, name, what, wait=True)
            created = self.api.create_namespaced_custom_object(*self._args(ns), job)
            logger.info("created %s", what)
            return created
        logger.info("%s exists (%s): following it", what, state or "running")
        return existing

    def _follow(self, current: dict, what: str) -> tuple[str, str]:
        """Watch the job's own object until a terminal condition (no polling interval)."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        ns, name = current["metadata"]["namespace"], current["metadata"]["name"]
        deadline = time.monotonic() + self.timeout_s
        while True:
            state, message = self.kind.terminal(current)
            if state:
                return state, message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PlatformError(f"{what} did not finish within {self.timeout_s:.0f}s")
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    self.api.list_namespaced_custom_object, *self._args(ns),
                    field_selector=f"metadata.name={name}",
                    resource_version=current["metadata"]["resourceVersion"],
                    timeout_seconds=int(min(remaining, 300)) or 1,
                ):  # fmt: skip
                    if event["type"] == "DELETED":
                        raise PlatformError(f"{what} was deleted while it ran")
                    if event["type"] == "ERROR":
                        break  # e.g. 410 Gone: read the object again and watch from there
                    current = event["object"]
                    if self.kind.terminal(current)[0]:
                        stream.stop()
                        break
            except ApiException as e:
                if e.status != 410:
                    raise PlatformError(f"watching {what} failed: {e.status} {e.reason}") from e
            if not self.kind.terminal(current)[0]:
                current = self.api.get_namespaced_custom_object(*self._args(ns), name)

    def _delete(self, ns: str, name: str, what: str, wait: bool = False) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        try:
            self.api.delete_namespaced_custom_object(
                *self._args(ns), name, propagation_policy="Background"
            )
        except ApiException as e:
            if e.status == 404:
                return
            raise PlatformError(f"cannot delete {what}: {e.status} {e.reason}") from e
        logger.info("deleted %s (policy %s)", what, self.policy)
        if not wait:
            return
        stream = watch.Watch()
        try:
            self.api.get_namespaced_custom_object(*self._args(ns), name)
        except ApiException as e:
            if e.status == 404:
                return
            raise
        for event in stream.stream(self.api.list_namespaced_custom_object, *self._args(ns),
                                   field_selector=f"metadata.name={name}",
                                   timeout_seconds=120):  # fmt: skip
            if event["type"] == "DELETED":
                stream.stop()
                return
        raise PlatformError(f"{what} was not gone 120 s after its deletion")

    def _failed_pods(self, ns: str, name: str) -> str:
        """What failed, pod by pod: ``; pod <name>: exit code N (reason)``."""
        if self.core is None:
            return ""
        try:
            pods = self.core.list_namespaced_pod(ns, label_selector=self.kind.pods_selector(name))
        except Exception as e:  # noqa: BLE001 - the job's own reason is already in the message
            logger.warning("cannot list the pods of %s: %s", name, e)
            return ""
        out = []
        for pod in pods.items:
            for status in (pod.status and pod.status.container_statuses) or []:
                term = status.state and status.state.terminated
                term = (
                    term
                    if term and term.exit_code
                    else (status.last_state and status.last_state.terminated)
                )
                if term and term.exit_code:
                    restarts = f", {status.restart_count} restarts" if status.restart_count else ""
                    out.append(f"pod {pod.metadata.name}: exit code {term.exit_code} "
                               f"({term.reason or 'Error'}{restarts})")  # fmt: skip
        return "; " + "; ".join(out) if out else ""

    # ---- rank 0's log ---------------------------------------------------------------------
    def _stream_rank0(self, ns: str, name: str, stop: threading.Event) -> None:
        """Copy rank 0's container log into this log while the job runs (best effort)."""
        if self.core is None:
            return
        try:
            pod = self._wait_rank0_started(ns, self.kind.rank0_selector(name), stop)
            if pod is None:
                return
            resp = self.core.read_namespaced_pod_log(
                pod, ns, container=self.kind.container, follow=True, _preload_content=False
            )
            pending = b""
            for chunk in resp.stream(4096):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    logger.info("[%s] %s", pod, line.decode(errors="replace"))
            if pending:
                logger.info("[%s] %s", pod, pending.decode(errors="replace"))
        except Exception as e:  # noqa: BLE001 - logs are best effort; the job's state decides
            logger.warning("no log stream from rank 0 of %s: %s", name, e)

    def _wait_rank0_started(self, ns: str, selector: str, stop: threading.Event) -> str | None:
        from kubernetes import watch

        while not stop.is_set():
            stream = watch.Watch()
            for event in stream.stream(self.core.list_namespaced_pod, ns,
                                       label_selector=selector, timeout_seconds=30):  # fmt: skip
                pod = event["object"]
                if pod.status and pod.status.phase in ("Running", "Succeeded", "Failed"):
                    stream.stop()
                    return pod.metadata.name
                if stop.is_set():
                    stream.stop()
                    return None
        return None


def run_cluster_job(spec: ClusterSpec, launcher: str, policy: str = JOB_POLICIES[0],
                    api: Any = None, core: Any = None) -> str:  # fmt: skip
    """Render ``spec`` with ``launcher``, run it to the end (see :class:`JobRunner`)."""
    kind = kind_for(launcher)
    if api is None:
        api, core = kube_clients()
    return JobRunner(kind, api, core, policy).run(kind.render(spec))
