"""How long a run trains and how often it evaluates: a budget of examples seen, scaled to rows.

A fixed epoch count is wrong at both ends: one epoch of 1,600 rows is ~50 optimizer steps, too
few to move a pretrained encoder; one epoch of millions is hours. The default instead sees
``budget_passes`` times the training rows, clamped to ``[min_examples, max_examples]``: small
sets get several passes (the floor), large ones stop at the ceiling, which keeps the embedded
default a few minutes on 2 cores. Early stopping on the gate's metric cuts the run short
once validation stops improving (generated reviews saturate within a few hundred steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class StepPlan:
    """Optimizer steps of the run, the evaluation interval, and why."""

    total_steps: int
    eval_every: int  # 0: at each epoch end
    examples: int  # examples the plan sees (total_steps x batch)
    rule: str

    def describe(self) -> str:
        every = f"every {self.eval_every} steps" if self.eval_every else "at each epoch end"
        return f"{self.total_steps} steps ({self.examples} examples, {self.rule}), eval {every}"


def budget_examples(train_rows: int, passes: float, floor: int, ceiling: int) -> int:
    """``passes`` x ``train_rows``, clamped to [floor, ceiling]."""
    return int(min(max(round(passes * train_rows), floor), ceiling))


def plan_steps(
    train_rows: int, batch_size: int, steps_per_epoch: int, *, max_steps: int = 0,
    epochs: int = 0, passes: float = 3.0, floor: int = 9_600, ceiling: int = 15_000,
    evaluations: int = 6, eval_every: int = 0,
) -> StepPlan:  # fmt: skip
    """The run's steps: ``max_steps`` if set, else ``epochs`` if set, else the examples budget.

    ``eval_every`` wins when set; otherwise ``evaluations`` evenly spaced evaluations (the last
    on the final step), or, with 0, one per epoch.
    """
    if max_steps > 0:
        total, rule = max_steps, "max_steps"
    elif epochs > 0:
        total, rule = epochs * steps_per_epoch, f"{epochs} epochs of {steps_per_epoch} steps"
    else:
        examples = budget_examples(train_rows, passes, floor, ceiling)
        total = max(1, math.ceil(examples / batch_size))
        rule = (f"budget: {passes:g} passes over {train_rows} rows, within "
                f"[{floor}, {ceiling}] examples")  # fmt: skip
    every = eval_every or (max(1, math.ceil(total / evaluations)) if evaluations > 0 else 0)
    return StepPlan(total, every, total * batch_size, rule)
