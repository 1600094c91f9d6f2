"""What the train and learning-rate-trial KFP components run: stage the inputs, launch, read back.

The components stay thin interfaces; this module builds the trainer's arguments from their
parameters, launches torchrun in this pod (or a TrainJob / PyTorchJob across nodes, whose pods
read and write S3 only) and reads results.json.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def stage_inputs(train_path: str, validation_path: str, stats_path: str) -> Path:
    """One directory laid out as the trainer reads it (train/, validation/, stats.json)."""
    data = Path(tempfile.mkdtemp(prefix="train-data-"))
    for name, path in (("train", train_path), ("validation", validation_path)):
        os.symlink(path, data / name)
    shutil.copy(stats_path, data / "stats.json")
    return data


def trainer_args(data: Path | str, output_dir: str, **params: Any) -> list[str]:
    """``--key value`` for every trainer parameter given (booleans as --x / --no-x)."""
    args = ["--data", str(data), "--output-dir", output_dir]
    for key, value in params.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + key.replace("_", "-"))
        else:
            args += [flag, str(value)]
    return args


def launch(args: list[str], run_id: str, num_nodes: int, gpus_per_node: int, cpu_processes: int,
           image: str = "", launcher: str = "trainjob",
           job_policy: str = "delete-on-success") -> None:  # fmt: skip
    """Torchrun in this pod, or with ``num_nodes > 1`` a TrainJob (or PyTorchJob).

    One process per GPU (or ``cpu_processes``) per node; the job's pods read and write S3 only.

    ``args`` must then carry ``s3://`` data, output and checkpoint URIs (:func:`cluster_io`).
    """
    if num_nodes > 1:
        from components.common.settings import Settings
        from components.common.tracking import forwarded_env
        from components.train.cluster import ClusterSpec, job_name, run_cluster_job

        settings = Settings.from_env()
        spec = ClusterSpec(
            name=job_name(run_id), image=image or settings.image("train"), train_args=args,
            namespace=settings.training_namespace, num_nodes=num_nodes,
            procs_per_node=gpus_per_node or cpu_processes, gpus_per_node=gpus_per_node,
            env=forwarded_env(),  # rank 0 logs into the MLflow run KFP made for this task
        )  # fmt: skip
        run_cluster_job(spec, launcher, job_policy)
        return
    from components.train.launch import run_torchrun

    # A failure fails the task; the pipeline retries it and the retry resumes from S3.
    run_torchrun(gpus_per_node or cpu_processes, args, max_restarts=0)


def cluster_io(data: Path, run_id: str, checkpoint_uri: str) -> tuple[str, str]:
    """S3 URIs of the data and the output for the pods of a multi-node job.

    The pods share no disk with this one: the staged splits go to the run's S3 prefix
    (``<DATA_BUCKET>/<RUNS_PREFIX><run id>/train/data/``); the model and results.json come
    back from ``.../train/model/``. Checkpoints must be on S3 already.
    """
    from components.common.errors import ConfigurationError
    from components.common.settings import Settings
    from components.common.storage import S3Storage, is_s3_uri

    if not is_s3_uri(checkpoint_uri):
        raise ConfigurationError(
            f"checkpoint_uri {checkpoint_uri!r} is not s3://: the pods of a multi-node job "
            "share no disk, so their checkpoints must be on S3"
        )
    base = Settings.from_env().run_uri(run_id) + "train/"
    storage = S3Storage()
    for split in ("train", "validation"):
        storage.upload_dir((data / split).resolve(), f"{base}data/{split}/")
    storage.upload_file(data / "stats.json", f"{base}data/stats.json")
    return f"{base}data/", f"{base}model/"


def fetch_output(remote: str, local: str) -> None:
    """The job's model directory and results.json, from S3 into this pod's output path."""
    from components.common.errors import StorageError
    from components.common.storage import S3Storage

    storage = S3Storage()
    if not storage.exists(remote + "results.json"):
        raise StorageError(f"the training job ended without {remote}results.json")
    storage.download_prefix(remote, local)


def run_train(train_path: str, validation_path: str, stats_path: str, output_dir: str, *,
              run_id: str, checkpoint_uri: str, num_nodes: int, gpus_per_node: int,
              cpu_processes: int, image: str = "", launcher: str = "trainjob",
              job_policy: str = "delete-on-success", **params: Any) -> dict:  # fmt: skip
    """What the train component does: stage, launch (here or on the cluster), read back."""
    data = stage_inputs(train_path, validation_path, stats_path)
    data_arg, out_arg = str(data), output_dir
    if num_nodes > 1:
        data_arg, out_arg = cluster_io(data, run_id, checkpoint_uri)
    args = trainer_args(data_arg, out_arg, run_id=run_id,
                        checkpoint_uri=checkpoint_uri, **params)  # fmt: skip
    launch(args, run_id, num_nodes, gpus_per_node, cpu_processes, image, launcher, job_policy)
    if num_nodes > 1:
        fetch_output(out_arg, output_dir)
    return read_results(output_dir)


def read_results(output_dir: str) -> dict:
    return json.loads((Path(output_dir) / "results.json").read_text())
