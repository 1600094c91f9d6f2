"""Multi-node training as a Kubeflow Training Operator PyTorchJob: render, submit, watch.

The component renders the job from ``pytorchjob_template.yaml``, creates it with the
kubernetes client, follows its conditions to Succeeded or Failed, streams the master's log,
and fails with the job's own reason.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from components.common.errors import PlatformError

logger = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "pytorchjobs"


@dataclass(frozen=True)
class JobSpec:
    """What varies between PyTorchJobs of this project."""

    name: str
    image: str
    train_args: list[str]
    namespace: str = "review-classifier"
    num_nodes: int = 2
    gpus_per_node: int = 1
    cpu: str = "8"
    memory: str = "64Gi"
    service_account: str = "review-classifier-training"
    node_selector: dict[str, str] = field(
        default_factory=lambda: {"nvidia.com/gpu.present": "true"}
    )
    env: dict[str, str] = field(default_factory=dict)


def load_template() -> dict:
    text = resources.files("components.train").joinpath("pytorchjob_template.yaml").read_text()
    return yaml.safe_load(text)


def render_pytorchjob(spec: JobSpec) -> dict:
    """The PyTorchJob object: 1 master + (nodes-1) workers, one torchrun process per GPU."""
    if spec.num_nodes < 2:
        raise ValueError("a PyTorchJob is for num_nodes >= 2; one node runs torchrun in the pod")
    job = load_template()
    job["metadata"].update({"name": spec.name, "namespace": spec.namespace})
    job["metadata"].setdefault("labels", {})["review-classifier/run"] = spec.name
    job["spec"]["nprocPerNode"] = str(spec.gpus_per_node)
    replicas = job["spec"]["pytorchReplicaSpecs"]
    master = replicas["Master"]
    for role, count in (("Master", 1), ("Worker", spec.num_nodes - 1)):
        replica = replicas[role] = copy.deepcopy(master) if role == "Worker" else master
        replica["replicas"] = count
        pod = replica["template"]["spec"]
        pod["serviceAccountName"] = spec.service_account
        pod["nodeSelector"] = dict(spec.node_selector)
        container = pod["containers"][0]
        container["image"] = spec.image
        container["args"] = list(spec.train_args)
        container["env"] = [
            *container.get("env", []),
            *({"name": k, "value": v} for k, v in sorted(spec.env.items())),
        ]
        limits = {"cpu": spec.cpu, "memory": spec.memory, "nvidia.com/gpu": str(spec.gpus_per_node)}
        container["resources"] = {"requests": dict(limits), "limits": dict(limits)}
    return job


def _condition(job: dict) -> tuple[str | None, str]:
    """The job's terminal condition (Succeeded/Failed) and its message, if any."""
    for cond in job.get("status", {}).get("conditions", []) or []:
        if cond.get("status") == "True" and cond.get("type") in ("Succeeded", "Failed"):
            return cond["type"], cond.get("message") or cond.get("reason") or ""
    return None, ""


def submit_and_wait(
    job: dict, api: Any = None, core: Any = None, timeout_s: float = 24 * 3600, poll_s: float = 10
) -> str:
    """Create ``job``, wait for Succeeded (returned) or Failed (raised with the reason)."""
    if api is None:
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        api, core = client.CustomObjectsApi(), client.CoreV1Api()
    ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
    api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, job)
    logger.info("created PyTorchJob %s/%s", ns, name)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        current = api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        state, message = _condition(current)
        if state == "Succeeded":
            _log_master(core, ns, name)
            return message or "Succeeded"
        if state == "Failed":
            _log_master(core, ns, name)
            raise PlatformError(f"PyTorchJob {ns}/{name} failed: {message}")
        time.sleep(poll_s)
    raise PlatformError(f"PyTorchJob {ns}/{name} did not finish within {timeout_s:.0f}s")


def _log_master(core: Any, ns: str, name: str) -> None:
    if core is None:
        return
    try:
        text = core.read_namespaced_pod_log(f"{name}-master-0", ns, tail_lines=200)
    except Exception as e:  # noqa: BLE001 - logs are best effort; the job's state decides
        logger.warning("no master log for %s: %s", name, e)
        return
    for line in text.splitlines():
        logger.info("[master] %s", line)
