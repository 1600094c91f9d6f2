"""KFP interface of the train stage: torchrun in this pod, or a PyTorchJob across nodes."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.common.images import image


@dsl.component(base_image=image("train"), install_kfp_package=False)
def train(
    train_data: Input[Dataset],
    validation_data: Input[Dataset],
    ingest_stats: Input[Artifact],
    model: Output[Model],
    metrics: Output[Metrics],
    run_id: str,
    checkpoint_uri: str,
    model_name_or_path: str = "",
    max_seq_length: int = 64,
    learning_rate: float = 1e-5,
    batch_size: int = 128,
    epochs: int = 1,
    max_steps: int = 0,
    num_layers: int = 2,
    hidden_size: int = 128,
    num_heads: int = 2,
    gpus_per_node: int = 0,
    num_nodes: int = 1,
    cpu_processes: int = 2,
    image: str = "",
) -> NamedTuple("Outputs", [("mlflow_run_id", str), ("val_accuracy", float)]):
    """Fine-tune BERT on the ingest splits; the output Model is a save_pretrained directory."""
    import json
    import os
    import shutil
    import tempfile
    from collections import namedtuple
    from pathlib import Path

    from components.common.logs import configure_logging
    from components.train.launch import run_torchrun

    configure_logging()
    data = Path(tempfile.mkdtemp(prefix="train-data-"))
    for name, artifact in (("train", train_data), ("validation", validation_data)):
        os.symlink(artifact.path, data / name)
    shutil.copy(ingest_stats.path, data / "stats.json")
    args = [
        "--data", str(data), "--output-dir", model.path, "--run-id", run_id,
        "--checkpoint-uri", checkpoint_uri, "--model-name-or-path", model_name_or_path,
        "--max-seq-length", str(max_seq_length), "--learning-rate", str(learning_rate),
        "--batch-size", str(batch_size), "--epochs", str(epochs), "--max-steps", str(max_steps),
        "--num-layers", str(num_layers), "--hidden-size", str(hidden_size),
        "--num-heads", str(num_heads),
    ]  # fmt: skip
    if num_nodes > 1:
        from components.train.pytorchjob import JobSpec, render_pytorchjob, submit_and_wait

        # Multi-node: data and output must be shared; the job reads and writes S3.
        spec = JobSpec(name=f"train-{run_id}"[:63], image=image, train_args=args,
                       num_nodes=num_nodes, gpus_per_node=max(1, gpus_per_node))  # fmt: skip
        submit_and_wait(render_pytorchjob(spec))
    else:
        # A failure fails the task; the pipeline retries it and the retry resumes from S3.
        run_torchrun(gpus_per_node or cpu_processes, args, max_restarts=0)
    results = json.loads((Path(model.path) / "results.json").read_text())
    final = results["final"]
    for key in ("val_accuracy", "val_macro_f1", "val_loss"):
        metrics.log_metric(key, final[key])
    metrics.log_metric("steps", results["steps"])
    model.metadata.update(
        {"mlflow_run_id": results["mlflow_run_id"], "framework": "transformers",
         "mlflow_model_uri": results.get("mlflow_model_uri")}
    )  # fmt: skip
    outputs = namedtuple("Outputs", ["mlflow_run_id", "val_accuracy"])
    return outputs(results["mlflow_run_id"] or "", float(final["val_accuracy"]))
