"""What both multi-node launchers share: the job's spec, its template, its end (a leaf module).

``components/train/trainjob.py`` and ``pytorchjob.py`` render a :class:`ClusterSpec` into their
job objects; ``components/train/cluster.py`` runs either. This module imports neither, so the
three depend on it and not on each other.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from importlib import resources

import yaml

from components.common.errors import ConfigurationError
from components.common.settings import DEFAULT_NAMESPACE, TRAINING_CONFIG_MAP

# torchrun reads the PET_* variables either controller sets (nodes, node rank, master address).
TORCHRUN = ["python", "-m", "torch.distributed.run", "--max-restarts=0", "-m", "components.train"]
# Kubernetes object names: RFC 1035 labels (TrainJob enforces it), with room for the pod
# names the controllers derive (``<name>-node-0-<i>-<5 chars>``, ``<name>-worker-<i>``).
MAX_NAME = 40


@dataclass(frozen=True)
class ClusterSpec:
    """What varies between this project's training jobs (both launchers)."""

    name: str
    image: str
    train_args: list[str]
    namespace: str = DEFAULT_NAMESPACE
    num_nodes: int = 2
    procs_per_node: int = 1
    gpus_per_node: int = 1
    cpu: str = "8"
    memory: str = "64Gi"
    service_account: str = "review-classifier-training"
    config_map: str = TRAINING_CONFIG_MAP
    env: dict[str, str] = field(default_factory=dict)

    def resources(self) -> dict:
        """Requests = limits per node: CPU, memory and, on GPU nodes, the GPUs."""
        limits = {"cpu": self.cpu, "memory": self.memory}
        if self.gpus_per_node:
            limits["nvidia.com/gpu"] = str(self.gpus_per_node)
        return {"requests": dict(limits), "limits": dict(limits)}

    def apply_to_pod(self, pod: dict) -> None:
        """The pod-level settings: service account; CPU nodes lose the GPU scheduling."""
        pod["serviceAccountName"] = self.service_account
        if not self.gpus_per_node:
            pod.pop("nodeSelector", None)
            pod.pop("tolerations", None)

    def __post_init__(self) -> None:
        if self.num_nodes < 2:
            raise ConfigurationError(
                f"a cluster job is for num_nodes >= 2 (got {self.num_nodes}); one node runs "
                "torchrun in the pipeline's own pod"
            )
        if not self.image:
            raise ConfigurationError("a cluster job needs the train image (IMAGE_REGISTRY/TAG)")
        if self.procs_per_node < 1:
            raise ConfigurationError(f"procs_per_node must be >= 1, got {self.procs_per_node}")


def load_template(filename: str, spec: ClusterSpec) -> dict:
    """A job template of this package with the spec's name, namespace and run label."""
    job = yaml.safe_load(resources.files("components.train").joinpath(filename).read_text())
    job["metadata"].update({"name": spec.name, "namespace": spec.namespace})
    job["metadata"].setdefault("labels", {})["review-classifier/run"] = spec.name
    return job


def job_name(run_id: str) -> str:
    """``train-<run id>`` as a DNS label, with a hash suffix when it had to be shortened."""
    base = re.sub(r"[^a-z0-9-]+", "-", f"train-{run_id}".lower()).strip("-")
    if len(base) <= MAX_NAME:
        return base
    digest = hashlib.sha1(run_id.encode()).hexdigest()[:8]
    return f"{base[: MAX_NAME - 9].rstrip('-')}-{digest}"


def terminal_condition(job: dict, succeeded: str) -> tuple[str | None, str]:
    """A job's end from its conditions: ("Succeeded" | "Failed" | None, "<reason>: <message>").

    ``succeeded`` is the launcher's own name for success (TrainJob: Complete).
    """
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in (succeeded, "Failed"):
            reason, message = cond.get("reason") or "", cond.get("message") or ""
            text = f"{reason}: {message}" if reason and message else reason or message
            return ("Succeeded" if cond["type"] == succeeded else "Failed"), text
    return None, ""
