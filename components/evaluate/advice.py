"""What to change when the gate fails, from the run's own figures (ingest stats, train results).

Each rule reads one figure and, when it points at a cause, names the parameter to change and
the value the defaults would use. The rules follow what the real-review runs of issue 27
showed: too few rows or steps, undersampling, an unweighted loss on imbalanced classes, a
learning rate far from 5e-5, and a test split too small for the paired test to decide.
"""

from __future__ import annotations

import json
from pathlib import Path

# Below these the paired bootstrap interval of a 3-point gain usually spans zero.
MIN_DECISIVE_TEST_ROWS = 500
MIN_TRAIN_ROWS = 2_000
MIN_EXAMPLES = 9_600  # TrainConfig.min_examples
IMBALANCE = 5.0  # largest class / smallest class
LR_RANGE = (2e-5, 2e-4)


def read_train_results(model_dir: str | Path) -> dict:
    """The train step's results.json beside the model, or {} when there is none."""
    path = Path(model_dir) / "results.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _classes(stats: dict) -> dict[str, int]:
    return stats.get("split_classes", {}).get("train") or stats.get("classes_after", {})


def data_advice(stats: dict) -> list[str]:
    """Rows, undersampling, imbalance and test size, from ingest's stats.json."""
    out: list[str] = []
    splits, config = stats.get("splits", {}), stats.get("config", {})
    train, test = splits.get("train", 0), splits.get("test", 0)
    accepted = stats.get("rows_accepted", 0)
    if config.get("balance") and accepted > 2 * sum(splits.values()):
        out.append(f"balance=true undersampled {accepted} accepted rows to {sum(splits.values())}: "
                   "set balance=false (every row kept, the loss weighted by class)")  # fmt: skip
    if train and train < MIN_TRAIN_ROWS:
        out.append(f"only {train} training rows: add reviews (at least {MIN_TRAIN_ROWS}), or "
                   "fewer classes (label_mode=sentiment)")  # fmt: skip
    if test and test < MIN_DECISIVE_TEST_ROWS:
        out.append(f"the test split has {test} rows (under {MIN_DECISIVE_TEST_ROWS}): the paired "
                   "interval is too wide to decide small gains; raise test_fraction or add data, "
                   "or use baseline_test=non_inferiority")  # fmt: skip
    return out


def training_advice(results: dict, stats: dict) -> list[str]:
    """Steps against the budget, class weighting, learning rate, from the train results."""
    out: list[str] = []
    if not results:
        return out
    steps, total = results.get("steps", 0), results.get("total_steps", 0)
    batch_examples = results.get("examples_per_step") or 0
    seen = steps * batch_examples
    if batch_examples and seen < MIN_EXAMPLES and not results.get("early_stopped"):
        out.append(f"training saw {seen} examples ({steps} steps): leave epochs=0 and "
                   f"max_steps=0 so the examples budget (at least {MIN_EXAMPLES}) "
                   "decides")  # fmt: skip
    best, history = results.get("best_step", -1), results.get("history", [])
    if results.get("early_stopped") and history and best == history[0].get("step"):
        out.append(f"the best validation score came at the first evaluation (step {best}) and "
                   "never improved: lower learning_rate (default 5e-5)")  # fmt: skip
    classes = [n for n in _classes(stats).values() if n > 0]
    ratio = max(classes) / min(classes) if classes else 1.0
    if ratio >= IMBALANCE and results.get("class_weighting", "none") == "none":
        out.append(f"the largest class is {ratio:.0f}x the smallest and the loss is unweighted: "
                   "set class_weighting=sqrt")  # fmt: skip
    lr = results.get("learning_rate")
    if lr and not LR_RANGE[0] <= lr <= LR_RANGE[1]:
        out.append(f"learning_rate {lr:g} is outside [{LR_RANGE[0]:g}, {LR_RANGE[1]:g}] where "
                   f"the pretrained encoder trained well ({total} steps): try 5e-5")  # fmt: skip
    return out


def advise(stats: dict, results: dict) -> list[str]:
    """Every rule that points at a cause, data first."""
    return data_advice(stats) + training_advice(results, stats)
