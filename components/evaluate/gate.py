"""The deployment gate: an accuracy floor, then paired comparisons with the baseline and champion.

A point difference on a small test split is noise (one row of 230 is 0.0043), so the baseline
and champion checks decide on a paired bootstrap interval of the difference on the same rows
(``components.evaluate.paired``):
- ``superiority`` (cluster default): the interval must lie above ``min_gain_over_baseline``:
  the model is shown to beat the baseline;
- ``non_inferiority``: fails only when the interval lies wholly below it: the model is shown to
  be worse. For data a baseline already solves to its ceiling (the generated reviews), where no
  model can be shown better;
- champion: fails only when the model is shown to be worse than the champion by more than
  ``max_regression``;
- category gap (off unless ``max_category_accuracy_gap`` >= 0): the worst product category's
  accuracy difference against the other rows (``components.evaluate.bias``), among categories
  with at least ``min_category_rows`` test rows, must not exceed the bound.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from components.common.errors import ConfigurationError
from components.evaluate.paired import METRICS, PairedDifference, paired_bootstrap

BASELINE_TESTS = ("superiority", "non_inferiority")


@dataclass(frozen=True)
class GateConfig:
    """Thresholds; the accuracy floor suits 5 balanced classes (chance is 0.2)."""

    min_accuracy: float = 0.45
    # Macro-F1: on real reviews (62% five stars) accuracy rewards predicting 5 everywhere;
    # the train step selects its best weights on the same metric (TrainConfig).
    metric: str = "macro_f1"
    min_gain_over_baseline: float = 0.0
    baseline_test: str = "superiority"
    max_regression: float = 0.01
    confidence: float = 0.95
    resamples: int = 2000
    max_category_accuracy_gap: float = -1.0  # below 0: not checked (a KFP parameter is no None)
    min_category_rows: int = 30

    def __post_init__(self) -> None:
        gap = self.max_category_accuracy_gap
        if gap > 1:
            raise ConfigurationError(f"max_category_accuracy_gap must be at most 1 (below 0: "
                                     f"not checked), got {gap}")  # fmt: skip
        if self.min_category_rows < 1:
            raise ConfigurationError(
                f"min_category_rows must be >= 1, got {self.min_category_rows}"
            )
        if self.metric not in METRICS:
            raise ConfigurationError(f"gate metric {self.metric!r} is not one of: "
                                     f"{', '.join(METRICS)}")  # fmt: skip
        if self.baseline_test not in BASELINE_TESTS:
            raise ConfigurationError(f"baseline_test {self.baseline_test!r} is not one of: "
                                     f"{', '.join(BASELINE_TESTS)}")  # fmt: skip
        if not 0.5 <= self.confidence < 1:
            raise ConfigurationError(f"confidence must be in [0.5, 1), got {self.confidence}")


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    value: float
    threshold: float
    detail: str
    interval: list[float] | None = None


@dataclass(frozen=True)
class Decision:
    passed: bool
    checks: list[Check]
    comparisons: dict[str, PairedDifference] = field(default_factory=dict)
    report: str = ""
    advice: tuple[str, ...] = ()  # what to change, from the run's figures (advice.py)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def message(self) -> str:
        if self.passed:
            return "gate passed: " + "; ".join(c.detail for c in self.checks)
        where = f"; report: {self.report}" if self.report else ""
        change = f"; what to change: {'; '.join(self.advice)}" if self.advice else ""
        failed = "; ".join(f"{c.name}: {c.detail}" for c in self.failed)
        return f"gate failed: {failed}{where}{change}"

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "checks": [asdict(c) for c in self.checks],
            "comparisons": {k: v.to_dict() for k, v in self.comparisons.items()},
            "advice": list(self.advice),
        }


def _accuracy_floor(accuracy: float, cfg: GateConfig) -> Check:
    ok = accuracy >= cfg.min_accuracy
    return Check("min_accuracy", ok, accuracy, cfg.min_accuracy,
                 f"accuracy {accuracy:.4f} {'>=' if ok else '<'} min_accuracy "
                 f"{cfg.min_accuracy:.4f}")  # fmt: skip


def _baseline_check(diff: PairedDifference, cfg: GateConfig) -> Check:
    margin = cfg.min_gain_over_baseline
    if cfg.baseline_test == "superiority":
        ok = diff.low > margin
        rule = f"needs the interval above {margin:+.4f}"
        name = "beats_baseline"
    else:
        ok = diff.high >= margin
        rule = f"fails only if the interval lies below {margin:+.4f}"
        name = "not_worse_than_baseline"
    return Check(name, ok, diff.difference, margin, f"{diff.describe('baseline')}; {rule}",
                 [diff.low, diff.high])  # fmt: skip


def _champion_check(diff: PairedDifference, version: str, cfg: GateConfig) -> Check:
    floor = -cfg.max_regression
    ok = diff.high >= floor
    return Check("no_regression_vs_champion", ok, diff.difference, floor,
                 f"{diff.describe(f'champion v{version}')}; fails only if the interval lies "
                 f"below {floor:+.4f}", [diff.low, diff.high])  # fmt: skip


def _category_check(worst: dict | None, cfg: GateConfig) -> Check:
    bound = cfg.max_category_accuracy_gap
    if worst is None:
        return Check("max_category_accuracy_gap", True, 0.0, bound,
                     f"no product category has {cfg.min_category_rows} test rows: "
                     "nothing to bound")  # fmt: skip
    ok = worst["accuracy_gap"] <= bound
    return Check("max_category_accuracy_gap", ok, worst["accuracy_gap"], bound,
                 f"worst category {worst['value']} ({worst['rows']} rows): accuracy "
                 f"{worst['accuracy']:.4f}, {worst['accuracy_gap']:+.4f} below the other rows "
                 f"{'<=' if ok else '>'} {bound:.4f}")  # fmt: skip


def decide(
    y_true: np.ndarray,
    predictions: dict[str, np.ndarray],
    num_labels: int,
    cfg: GateConfig,
    champion_version: str = "",
    report: str = "",
    worst_category: dict | None = None,
) -> Decision:
    """Every condition with the figures it compared; all must hold.

    ``predictions`` holds predicted class ids on the same rows for ``model`` and ``baseline``,
    and for ``champion`` when there is one; ``worst_category`` is
    :func:`components.evaluate.bias.worst_gap` of the product categories.
    """
    ours = np.asarray(predictions["model"])
    accuracy = float((ours == np.asarray(y_true)).mean())
    compare = lambda other: paired_bootstrap(  # noqa: E731
        y_true, ours, predictions[other], num_labels, cfg.metric, cfg.resamples, cfg.confidence
    )
    comparisons = {"baseline": compare("baseline")}
    checks = [_accuracy_floor(accuracy, cfg), _baseline_check(comparisons["baseline"], cfg)]
    if predictions.get("champion") is not None:
        comparisons["champion"] = compare("champion")
        checks.append(_champion_check(comparisons["champion"], champion_version, cfg))
    if cfg.max_category_accuracy_gap >= 0:
        checks.append(_category_check(worst_category, cfg))
    return Decision(all(c.passed for c in checks), checks, comparisons, report)
