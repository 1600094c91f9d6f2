"""KFP interface of the train stage: torchrun in this pod, or a TrainJob (PyTorchJob) across nodes.

Also the learning-rate search's trial and pick steps (``components.train.search``).
"""

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
    gpus_per_node: int,
    model_name_or_path: str = "bert-base-uncased",
    max_seq_length: int = 64,
    learning_rate: float = 5e-5,
    batch_size: int = 128,
    epochs: int = 0,
    max_steps: int = 0,
    budget_passes: float = 3.0,
    max_examples: int = 15_000,
    checkpoint_every: int = 0,
    num_layers: int = 2,
    hidden_size: int = 128,
    num_heads: int = 2,
    class_weighting: str = "sqrt",
    selection_metric: str = "macro_f1",
    num_nodes: int = 1,
    cpu_processes: int = 2,
    launcher: str = "trainjob",
    job_policy: str = "delete-on-success",
    train_image: str = "",
) -> NamedTuple("Outputs", [("mlflow_run_id", str), ("val_accuracy", float)]):
    """Fine-tune BERT on the ingest splits; the output Model is a save_pretrained directory.

    ``num_nodes > 1`` runs a Kubeflow Trainer TrainJob (``launcher=pytorchjob``: a Training
    Operator v1 PyTorchJob) of ``train_image`` (default: IMAGE_REGISTRY/train:IMAGE_TAG);
    ``job_policy`` is delete-on-success, keep or delete.
    """
    from collections import namedtuple

    from components.common.logs import configure_logging
    from components.train.step import run_train

    configure_logging()
    results = run_train(
        train_data.path, validation_data.path, ingest_stats.path, model.path, run_id=run_id,
        checkpoint_uri=checkpoint_uri, num_nodes=num_nodes, gpus_per_node=gpus_per_node,
        cpu_processes=cpu_processes, image=train_image, launcher=launcher,
        job_policy=job_policy, model_name_or_path=model_name_or_path,
        max_seq_length=max_seq_length, learning_rate=learning_rate, batch_size=batch_size,
        epochs=epochs, max_steps=max_steps, budget_passes=budget_passes,
        max_examples=max_examples, checkpoint_every=checkpoint_every, num_layers=num_layers,
        hidden_size=hidden_size, num_heads=num_heads, class_weighting=class_weighting,
        selection_metric=selection_metric,
    )  # fmt: skip
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


@dsl.component(base_image=image("train"), install_kfp_package=False)
def lr_trial(
    train_data: Input[Dataset],
    validation_data: Input[Dataset],
    ingest_stats: Input[Artifact],
    run_id: str,
    checkpoint_uri: str,
    learning_rate: float,
    max_steps: int,
    gpus_per_node: int,
    model_name_or_path: str = "bert-base-uncased",
    max_seq_length: int = 64,
    batch_size: int = 128,
    num_layers: int = 2,
    hidden_size: int = 128,
    num_heads: int = 2,
    class_weighting: str = "sqrt",
    selection_metric: str = "macro_f1",
    cpu_processes: int = 2,
) -> dict:
    """One short training trial of the learning-rate search: its best validation score.

    The trial has a run id of its own (checkpoints and MLflow run) and keeps no model.
    """
    import tempfile

    from components.common.logs import configure_logging
    from components.train.search import trial_run_id
    from components.train.step import launch, read_results, stage_inputs, trainer_args

    configure_logging()
    run_id = trial_run_id(run_id, learning_rate)
    data = stage_inputs(train_data.path, validation_data.path, ingest_stats.path)
    out = tempfile.mkdtemp(prefix="lr-trial-")
    args = trainer_args(
        data, out, run_id=run_id, checkpoint_uri=checkpoint_uri,
        model_name_or_path=model_name_or_path, max_seq_length=max_seq_length,
        learning_rate=learning_rate, batch_size=batch_size, epochs=1, max_steps=max_steps,
        checkpoint_every=0, num_layers=num_layers, hidden_size=hidden_size, num_heads=num_heads,
        class_weighting=class_weighting, selection_metric=selection_metric,
    )  # fmt: skip
    launch(args, run_id, 1, gpus_per_node, cpu_processes, "")
    results = read_results(out)
    return {"learning_rate": learning_rate, "score": results["best_val_metric"],
            "metric": results["selection_metric"], "run_id": run_id,
            "mlflow_run_id": results["mlflow_run_id"]}  # fmt: skip


@dsl.component(base_image=image("train"), install_kfp_package=False)
def pick_learning_rate(trials: list) -> float:
    """The learning rate of the best trial (by its validation score)."""
    import logging

    from components.common.logs import configure_logging
    from components.train.search import pick_best

    configure_logging()
    best = pick_best(trials)
    logging.getLogger(__name__).info("learning-rate search: %s -> %g", trials,
                                     best["learning_rate"])  # fmt: skip
    return float(best["learning_rate"])


@dsl.component(base_image=image("train"), install_kfp_package=False)
def fixed_learning_rate(learning_rate: float) -> float:
    """The configured learning rate, when no search runs (the other branch of the search)."""
    return learning_rate


@dsl.component(base_image=image("train"), install_kfp_package=False)
def train_placement(num_nodes: int, gpus_per_node: int) -> NamedTuple(
    "Placement", [("gpus", int), ("cpu", str), ("memory", str), ("node_selector", dict),
                  ("tolerations", list)]
):  # fmt: skip
    """The train step's pod: GPUs and a GPU node for torchrun here, none for a job launcher."""
    from collections import namedtuple

    from components.train.placement import train_placement as placement

    p = placement(num_nodes, gpus_per_node)
    outputs = namedtuple("Placement", ["gpus", "cpu", "memory", "node_selector", "tolerations"])
    return outputs(p["gpus"], p["cpu"], p["memory"], p["node_selector"], p["tolerations"])
