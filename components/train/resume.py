"""What a checkpoint holds besides the weights, and how a run resumes exactly.

The loop's counters (:class:`TrainState`), every random generator per rank (Python, NumPy,
torch, CUDA), the seeding and the data loaders' generator: ``save_checkpoint`` puts them into
the run's :class:`CheckpointStore` with the model, optimizer, scheduler and grad scaler, and
``restore_checkpoint`` brings a restarted run back to the same point (nanoGPT's habit: resume
is exact).
"""

from __future__ import annotations

import logging
import random
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from components.train import distributed as du
from components.train.checkpoint import CheckpointStore
from components.train.config import TrainConfig

logger = logging.getLogger(__name__)


@dataclass
class TrainState:
    """What a checkpoint restores besides the weights and optimizer."""

    step: int = 0
    epoch: int = 0
    batches_done_in_epoch: int = 0
    best_score: float = -1.0  # of the selection metric
    best_step: int = -1
    evals_without_improvement: int = 0
    mlflow_run_id: str | None = None
    history: list[dict] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_objects(obj: Any, ctx: du.DistContext) -> list[Any]:
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def loader_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    model = model.module if isinstance(model, DDP) else model
    return getattr(model, "_orig_mod", model)


def save_checkpoint(store: CheckpointStore, ctx: du.DistContext, cfg: TrainConfig,
                    state: TrainState, best_weights: dict[str, torch.Tensor] | None,
                    model: torch.nn.Module, optimizer: Any, scheduler: Any,
                    scaler: Any) -> None:  # fmt: skip
    """Rank 0 saves the checkpoint of ``state.step`` (every rank's RNG state included)."""
    rng = gather_objects(rng_state(), ctx)
    if ctx.is_main:
        saved = {
            "model": unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler else None,
            "rng": rng,
            "train_state": asdict(state),
            # Early stopping's best weights: a resumed run must save the same final model.
            # None when they are the current weights (no second copy of the model).
            "best_weights": None if state.best_step == state.step else best_weights,
            "config": asdict(cfg),
            "world_size": ctx.world_size,
        }
        store.save(state.step, saved)
    du.barrier(ctx)


def restore_checkpoint(store: CheckpointStore, ctx: du.DistContext, model: torch.nn.Module,
                       optimizer: Any, scheduler: Any,
                       scaler: Any) -> tuple[int, TrainState, dict | None] | None:  # fmt: skip
    """The latest checkpoint loaded into the objects: (step, state, best weights on rank 0).

    None without a checkpoint; best weights None when rank 0 has none to restore.
    """
    step = store.latest()
    if step is None:
        return None
    saved = store.load(step)
    unwrap(model).load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    if scaler and saved.get("scaler"):
        scaler.load_state_dict(saved["scaler"])
    state = TrainState(**saved["train_state"])
    best_weights = None
    if ctx.is_main and state.best_step >= 0:
        best = saved.get("best_weights")
        best_weights = best if best is not None else {
            k: v.detach().cpu().clone() for k, v in unwrap(model).state_dict().items()
        }  # fmt: skip
    if saved.get("world_size") == ctx.world_size:
        set_rng_state(saved["rng"][ctx.rank])
    logger.info("resumed from checkpoint step %d (epoch %d)", step, state.epoch)
    return step, state, best_weights
