"""Learning-rate search: a few short trials fanned out by the pipeline, the best one picked.

The book ran a 100-job Bayesian search over the learning rate on SageMaker. Here the pipeline
fans out one short training trial per candidate rate (``dsl.ParallelFor`` over the train
component in trial mode) and ``pick_best`` chooses the rate with the best validation score of
the selection metric; the full training run then uses it. Kubeflow's own tuning is moving from
Katib to Kubeflow Trainer's OptimizationJob; this interface (candidates in, one rate out) stays
the same whichever runs the trials.
"""

from __future__ import annotations

import math
import re

from components.common.errors import InvalidInput


def trial_run_id(run_id: str, learning_rate: float) -> str:
    """A run id of its own per trial: trials must not resume each other's checkpoints.

    Inside a ParallelFor the job-name placeholder can carry the iteration's path ('/'), which a
    run id (an S3 key part) may not hold.
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{run_id}-lr{learning_rate:g}")


def pick_best(trials: list[dict]) -> dict:
    """The trial with the highest ``score`` (ties: the smaller rate, the more cautious one)."""
    valid = [
        t for t in trials if isinstance(t.get("score"), int | float) and math.isfinite(t["score"])
    ]
    if not valid:
        raise InvalidInput(f"no learning-rate trial produced a score: {trials}")
    return max(valid, key=lambda t: (t["score"], -t["learning_rate"]))
