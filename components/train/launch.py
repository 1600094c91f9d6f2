"""Launching the trainer: torchrun on this machine or pod, or a PyTorchJob across nodes."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Sequence

from components.common.errors import PlatformError

logger = logging.getLogger(__name__)


def torchrun_argv(
    nproc: int, train_args: Sequence[str], max_restarts: int = 0, nnodes: int = 1
) -> list[str]:
    """``torchrun ... -m components.train <args>`` for ``nproc`` processes on this node."""
    argv = [
        sys.executable, "-m", "torch.distributed.run",
        f"--nproc-per-node={nproc}", f"--max-restarts={max_restarts}",
    ]  # fmt: skip
    if nnodes == 1:
        argv += ["--standalone"]
    return [*argv, "-m", "components.train", *train_args]


def run_torchrun(
    nproc: int, train_args: Sequence[str], max_restarts: int = 0, env: dict | None = None
) -> None:
    """Run training under torchrun, streaming its output; raise with the exit reason."""
    argv = torchrun_argv(nproc, train_args, max_restarts)
    logger.info("launching: %s", " ".join(argv))
    proc = subprocess.run(argv, env=env, check=False)  # noqa: S603 (our own argv)
    if proc.returncode != 0:
        raise PlatformError(f"training failed under torchrun (exit code {proc.returncode})")
