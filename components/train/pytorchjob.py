"""Legacy multi-node launcher: a Kubeflow Training Operator v1 ``PyTorchJob`` (``kubeflow.org/v1``).

For clusters still on the Training Operator (release-1.9); Kubeflow Trainer v2's TrainJob
(``components/train/trainjob.py``) is the default. Facts this follows, from kubeflow/trainer
v1.9.4 (``pkg/controller.v1/pytorch/``, ``pkg/apis/kubeflow.org/v1/common_types.go``): pods
``<name>-master-0`` and ``<name>-worker-<i>`` labelled ``training.kubeflow.org/job-name`` and
``training.kubeflow.org/replica-type``, container ``pytorch``, conditions ``Created``,
``Running``, ``Restarting``, ``Succeeded``, ``Failed``.
"""

from __future__ import annotations

import copy

from components.train.jobspec import TORCHRUN, ClusterSpec, load_template, terminal_condition

GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v1", "pytorchjobs", "PyTorchJob"
CONTAINER = "pytorch"


def render_pytorchjob(spec: ClusterSpec) -> dict:
    """The PyTorchJob object: 1 master + (nodes-1) workers, ``procs_per_node`` processes each."""
    job = load_template("pytorchjob_template.yaml", spec)
    job["spec"]["nprocPerNode"] = str(spec.procs_per_node)
    replicas = job["spec"]["pytorchReplicaSpecs"]
    master = replicas["Master"]
    for role, count in (("Master", 1), ("Worker", spec.num_nodes - 1)):
        replica = replicas[role] = copy.deepcopy(master) if role == "Worker" else master
        replica["replicas"] = count
        pod = replica["template"]["spec"]
        spec.apply_to_pod(pod)
        container = pod["containers"][0]
        container["image"] = spec.image
        container["command"] = list(TORCHRUN)
        container["args"] = list(spec.train_args)
        container["envFrom"] = [{"configMapRef": {"name": spec.config_map, "optional": True}}]
        container["env"] = [
            *container.get("env", []),
            *({"name": k, "value": v} for k, v in sorted(spec.env.items())),
        ]
        container["resources"] = spec.resources()
    return job


class PyTorchJobKind:
    group, version, plural, kind, container = GROUP, VERSION, PLURAL, KIND, CONTAINER

    def render(self, spec: ClusterSpec) -> dict:
        return render_pytorchjob(spec)

    def terminal(self, job: dict) -> tuple[str | None, str]:
        return terminal_condition(job, "Succeeded")

    def rank0_selector(self, name: str) -> str:
        return f"training.kubeflow.org/job-name={name},training.kubeflow.org/replica-type=master"

    def pods_selector(self, name: str) -> str:
        return f"training.kubeflow.org/job-name={name}"
