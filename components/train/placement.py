"""Where the train step's own pod runs: on a GPU node with torchrun, or as a CPU-only launcher.

With ``num_nodes > 1`` the step only creates and follows a TrainJob (or PyTorchJob) whose pods
hold the GPUs; its own pod must then ask for none (else a 2-node job needs 3 GPUs and may never
schedule). kfp.kubernetes settings are fixed when the pipeline compiles, so the pipeline takes
this placement from a small step and passes it as runtime parameters (KFP's driver resolves a
parameterised accelerator count and the nodeSelector / toleration JSON when it builds the pod:
kubeflow/pipelines backend/src/v2/driver, ``initPodSpecPatch``).
"""

from __future__ import annotations

from components.common.errors import ConfigurationError

GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
TRAINER = {"cpu": "8", "memory": "64G"}  # torchrun here: data loaders, tokenizer, one GPU each
LAUNCHER = {"cpu": "1", "memory": "2G"}  # creates, watches and logs a job: small


def train_placement(num_nodes: int, gpus_per_node: int) -> dict:
    """GPUs, CPU, memory, nodeSelector and tolerations of the train step's pod."""
    if num_nodes < 1 or gpus_per_node < 0:
        raise ConfigurationError(
            f"num_nodes {num_nodes} must be >= 1 and gpus_per_node {gpus_per_node} >= 0"
        )
    if num_nodes > 1:  # a launcher: the job's pods hold the GPUs
        return {"gpus": 0, **LAUNCHER, "node_selector": {}, "tolerations": []}
    if gpus_per_node == 0:
        return {"gpus": 0, **TRAINER, "node_selector": {}, "tolerations": []}
    return {"gpus": gpus_per_node, **TRAINER, "node_selector": dict(GPU_NODE_SELECTOR),
            "tolerations": [dict(GPU_TOLERATION)]}  # fmt: skip
