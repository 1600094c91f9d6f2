"""What the train and learning-rate-trial KFP components run: stage the inputs, launch, read back.

The components stay thin interfaces; this module builds the trainer's arguments from their
parameters, launches torchrun in this pod (or a PyTorchJob across nodes) and reads results.json.
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


def trainer_args(data: Path, output_dir: str, **params: Any) -> list[str]:
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
           image: str) -> None:  # fmt: skip
    """Torchrun with one process per GPU (or ``cpu_processes``), or a PyTorchJob across nodes."""
    if num_nodes > 1:
        from components.train.pytorchjob import JobSpec, render_pytorchjob, submit_and_wait

        # Multi-node: data and output must be shared; the job reads and writes S3.
        spec = JobSpec(name=f"train-{run_id}"[:63], image=image, train_args=args,
                       num_nodes=num_nodes, gpus_per_node=max(1, gpus_per_node))  # fmt: skip
        submit_and_wait(render_pytorchjob(spec))
        return
    from components.train.launch import run_torchrun

    # A failure fails the task; the pipeline retries it and the retry resumes from S3.
    run_torchrun(gpus_per_node or cpu_processes, args, max_restarts=0)


def read_results(output_dir: str) -> dict:
    return json.loads((Path(output_dir) / "results.json").read_text())
