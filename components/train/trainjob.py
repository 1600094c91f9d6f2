"""Kubeflow Trainer v2 ``TrainJob`` (``trainer.kubeflow.org/v1alpha1``): render and read status.

Facts this follows, from kubeflow/trainer v2.3.0 (commit 658725bd):
- the TrainJob API: ``pkg/apis/trainer/v1alpha1/trainjob_types.go`` (``trainer.env`` takes
  ``valueFrom`` but no ``envFrom``; pod settings go in ``runtimePatches``, v2.2+);
- conditions: ``Complete`` (reason ``AllJobsCompleted``) or ``Failed`` (``FailedJobs``,
  ``DeadlineExceeded``, ...), copied from the JobSet (``pkg/runtime/framework/plugins/jobset/
  jobset.go``); there is no Running condition;
- pods: JobSet ``<name>``, replicated job ``node``, labels ``jobset.sigs.k8s.io/jobset-name``
  and ``batch.kubernetes.io/job-completion-index`` (rank 0 is index 0), container ``node``.
"""

from __future__ import annotations

from components.common.settings import PLATFORM_ENV_KEYS
from components.train.jobspec import TORCHRUN, ClusterSpec, load_template, terminal_condition

GROUP, VERSION, PLURAL, KIND = "trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob"
RUNTIME = "torch-distributed"
CONTAINER = "node"


def render_trainjob(spec: ClusterSpec) -> dict:
    """The TrainJob: ``num_nodes`` pods of ``procs_per_node`` torchrun workers each."""
    job = load_template("trainjob_template.yaml", spec)
    trainer = job["spec"]["trainer"]
    trainer.update({"image": spec.image, "command": list(TORCHRUN), "args": list(spec.train_args),
                    "numNodes": spec.num_nodes, "numProcPerNode": spec.procs_per_node})  # fmt: skip
    # No envFrom on a TrainJob: each platform setting is a key of the ConfigMap (optional).
    trainer["env"] = [
        *trainer.get("env", []),
        *({"name": key, "valueFrom": {"configMapKeyRef": {
            "name": spec.config_map, "key": key, "optional": True}}}
          for key in PLATFORM_ENV_KEYS),
        *({"name": k, "value": v} for k, v in sorted(spec.env.items())),
    ]  # fmt: skip
    trainer["resourcesPerNode"] = spec.resources()
    (patch,) = job["spec"]["runtimePatches"]
    (node,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    spec.apply_to_pod(node["template"]["spec"]["template"]["spec"])
    return job


class TrainJobKind:
    group, version, plural, kind, container = GROUP, VERSION, PLURAL, KIND, CONTAINER

    def render(self, spec: ClusterSpec) -> dict:
        return render_trainjob(spec)

    def terminal(self, job: dict) -> tuple[str | None, str]:
        return terminal_condition(job, "Complete")

    def rank0_selector(self, name: str) -> str:
        return f"jobset.sigs.k8s.io/jobset-name={name},batch.kubernetes.io/job-completion-index=0"

    def pods_selector(self, name: str) -> str:
        return f"jobset.sigs.k8s.io/jobset-name={name}"
