"""Validation during training: loss, accuracy and macro-F1, each rank on its shard, reduced."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from components.common.metrics import metrics_from_confusion
from components.train import distributed as du
from components.train.data import TokenizedDataset, eval_shard
from components.train.precision import autocast
from components.train.resume import loader_generator


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset: TokenizedDataset, batch: int, ctx: du.DistContext,
             collate: Any, num_labels: int, precision: str, seed: int) -> dict:  # fmt: skip
    """Loss, accuracy and macro-F1 on ``dataset``, reduced over every rank."""
    model.eval()
    shard = Subset(dataset, eval_shard(len(dataset), ctx.rank, ctx.world_size))
    loader = DataLoader(shard, batch_size=batch, collate_fn=collate,
                        generator=loader_generator(seed))  # fmt: skip
    n = num_labels
    cm = torch.zeros((n, n), dtype=torch.float64)
    loss_sum = torch.zeros(1, dtype=torch.float64)
    for inputs in loader:
        inputs = {k: v.to(ctx.device, non_blocking=True) for k, v in inputs.items()}
        with autocast(precision, ctx.device):
            out = model(**inputs)
        loss_sum += float(out.loss) * len(inputs["labels"])
        preds = out.logits.argmax(-1).cpu()
        cm.index_put_((inputs["labels"].cpu(), preds), torch.ones(len(preds), dtype=cm.dtype),
                      accumulate=True)  # fmt: skip
    cm = du.all_reduce_sum(cm.to(ctx.device), ctx).cpu()
    loss_sum = du.all_reduce_sum(loss_sum.to(ctx.device), ctx).cpu()
    model.train()
    metrics = metrics_from_confusion(cm.numpy())
    return {
        "val_loss": float(loss_sum.item() / max(1, cm.sum().item())),
        "val_accuracy": metrics["accuracy"],
        "val_macro_f1": metrics["macro_f1"],
    }
