"""The gate's paired comparisons: bootstrap intervals, superiority and non-inferiority."""

import numpy as np
import pytest

from components.common.errors import ConfigurationError
from components.common.metrics import confusion_matrix, metrics_from_confusion
from components.evaluate.gate import GateConfig, decide
from components.evaluate.paired import batch_metric, paired_bootstrap


def _preds(y, correct_mask, rng):
    wrong = (y + rng.integers(1, 5, size=len(y))) % 5
    return np.where(correct_mask, y, wrong)


def _pair(n, acc_a, acc_b, seed=0, overlap=True):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, size=n)
    u = rng.random(n)
    a = _preds(y, u < acc_a, rng)
    b = _preds(y, (u if overlap else rng.random(n)) < acc_b, rng)
    return y, a, b


def test_batch_macro_f1_equals_the_confusion_matrix_figure():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, size=(3, 200))
    p = np.where(rng.random((3, 200)) < 0.6, y, rng.integers(0, 5, size=(3, 200)))
    got = batch_metric(y, p, 5, "macro_f1")
    for i in range(3):
        want = metrics_from_confusion(confusion_matrix(y[i], p[i], 5))["macro_f1"]
        assert got[i] == pytest.approx(want)
    assert batch_metric(y, p, 5, "accuracy")[0] == pytest.approx((y[0] == p[0]).mean())


def test_interval_covers_the_difference_and_pairing_narrows_it():
    y, a, b = _pair(1000, 0.80, 0.75)
    paired = paired_bootstrap(y, a, b, 5, "accuracy")
    assert paired.low < paired.difference < paired.high
    assert paired.difference == pytest.approx((a == y).mean() - (b == y).mean())
    y2, a2, b2 = _pair(1000, 0.80, 0.75, overlap=False)  # same accuracies, unrelated errors
    unpaired = paired_bootstrap(y2, a2, b2, 5, "accuracy")
    assert paired.high - paired.low < 0.6 * (unpaired.high - unpaired.low)


def test_one_row_cannot_flip_a_tie():
    y, a, _ = _pair(230, 0.9, 0.9)
    b = a.copy()
    b[np.flatnonzero(a == y)[0]] = (y[np.flatnonzero(a == y)[0]] + 1) % 5  # baseline one row worse
    cfg = GateConfig(metric="accuracy", min_accuracy=0.5, baseline_test="non_inferiority")
    assert decide(y, {"model": b, "baseline": a}, 5, cfg).passed  # one row behind: still passes
    strict = decide(
        y, {"model": a, "baseline": b}, 5, GateConfig(metric="accuracy", min_accuracy=0.5)
    )
    assert not strict.passed  # and one row ahead is no proof of beating it
    assert [c.name for c in strict.failed] == ["beats_baseline"]


@pytest.mark.parametrize(
    ("acc", "base", "champ", "cfg", "failing"),
    [
        (0.40, 0.30, None, GateConfig(metric="accuracy"), {"min_accuracy"}),
        (0.80, 0.70, None, GateConfig(metric="accuracy"), set()),
        (0.72, 0.70, None, GateConfig(metric="accuracy"), {"beats_baseline"}),
        (0.72, 0.70, None, GateConfig(metric="accuracy", baseline_test="non_inferiority"), set()),
        (
            0.60,
            0.75,
            None,
            GateConfig(metric="accuracy", baseline_test="non_inferiority"),
            {"not_worse_than_baseline"},
        ),
        (0.80, 0.50, 0.90, GateConfig(metric="accuracy"), {"no_regression_vs_champion"}),
        (0.80, 0.50, 0.805, GateConfig(metric="accuracy"), set()),
    ],
)
def test_each_gate_condition_fails_alone(acc, base, champ, cfg, failing):
    y, ours, baseline = _pair(2000, acc, base, seed=3, overlap=False)
    predictions = {"model": ours, "baseline": baseline}
    if champ is not None:
        predictions["champion"] = _pair(2000, acc, champ, seed=3)[2]
    decision = decide(y, predictions, 5, cfg, champion_version="7", report="/r/evaluation.json")
    assert {c.name for c in decision.failed} == failing
    assert decision.passed is (not failing)
    assert len(decision.checks) == (3 if champ is not None else 2)
    if failing:
        message = decision.message()
        assert message.startswith("gate failed:") and message.endswith("report: /r/evaluation.json")
        for check in decision.failed:
            assert check.name in message and check.detail in message


def test_failure_message_names_the_test_and_figures():
    y, ours, baseline = _pair(1000, 0.70, 0.70, seed=5)
    message = decide(y, {"model": ours, "baseline": baseline}, 5,
                     GateConfig(metric="accuracy", min_accuracy=0.5, min_gain_over_baseline=0.02)).message()  # fmt: skip
    assert "beats_baseline: accuracy" in message and "95% CI [" in message
    assert "paired bootstrap, 2000 resamples of 1000 rows" in message
    assert "needs the interval above +0.0200" in message


def test_macro_f1_gate_metric_and_bad_config():
    y, ours, baseline = _pair(1500, 0.85, 0.6, seed=2)
    decision = decide(y, {"model": ours, "baseline": baseline}, 5, GateConfig(metric="macro_f1"))
    assert decision.passed and decision.comparisons["baseline"].metric == "macro_f1"
    with pytest.raises(ConfigurationError, match="not one of: accuracy, macro_f1"):
        GateConfig(metric="f2")
    with pytest.raises(ConfigurationError, match="superiority, non_inferiority"):
        GateConfig(baseline_test="maybe")
