"""Post-training bias against a hand-computed case, the category gate, the global explanation's
aggregation and the evaluation report."""

import numpy as np
import pytest

from components.common.errors import ConfigurationError
from components.evaluate.bias import facet_metrics, length_bucket, post_training_bias, worst_gap
from components.evaluate.explanations import plot_top_words, top_words_per_class
from components.evaluate.gate import GateConfig, decide
from components.evaluate.report import report_html

LABELS = ["1", "2", "3", "4", "5"]  # positive predictions: 4 and 5 stars (ids 3 and 4)
Y_TRUE = np.array([0, 4, 4, 3, 0, 4])
Y_PRED = np.array([0, 4, 3, 0, 0, 1])
FACET = np.array(["A", "A", "A", "B", "B", "B"])


def test_facet_metrics_match_the_hand_computed_case():
    m = facet_metrics(Y_TRUE, Y_PRED, FACET, LABELS)
    # A: 2 of 3 right, 2 of 3 predicted positive; B: 1 of 3 right, none predicted positive
    a, b = m["A"], m["B"]
    assert a["rows"] == b["rows"] == 3
    assert a["accuracy"] == pytest.approx(2 / 3) and b["accuracy"] == pytest.approx(1 / 3)
    assert a["predicted_positive_share"] == pytest.approx(2 / 3)
    assert b["predicted_positive_share"] == 0.0
    assert a["DPPL"] == pytest.approx(0 - 2 / 3) and b["DPPL"] == pytest.approx(2 / 3)
    assert a["DI"] is None  # the rest (B) has no positive prediction: no ratio
    assert b["DI"] == 0.0
    assert a["AD"] == pytest.approx(1 / 3 - 2 / 3) and b["AD"] == pytest.approx(2 / 3 - 1 / 3)
    assert a["recall"] == {"1": 1.0, "2": None, "3": None, "4": None, "5": 0.5}
    assert b["recall"] == {"1": 1.0, "2": None, "3": None, "4": 0.0, "5": 0.0}
    assert worst_gap(m, min_rows=3) == {"value": "B", "accuracy_gap": pytest.approx(1 / 3),
                                        "accuracy": pytest.approx(1 / 3), "rows": 3}  # fmt: skip
    assert worst_gap(m, min_rows=4) is None


def test_one_facet_value_has_nothing_to_compare_with():
    m = facet_metrics(Y_TRUE, Y_PRED, np.array(["A"] * 6), LABELS)
    assert m["A"]["AD"] == 0.0 and m["A"]["DPPL"] == 0.0 and m["A"]["DI"] == 1.0


def test_length_buckets_and_both_facets():
    assert [length_bucket("w " * n) for n in (1, 15, 16, 47, 48, 300)] == [
        "1-15 words", "1-15 words", "16-47 words", "16-47 words", "48+ words", "48+ words"]  # fmt: skip
    texts = ["short one"] * 3 + ["w " * 30] * 3
    bias = post_training_bias(Y_TRUE, Y_PRED, FACET, texts, LABELS, min_rows=3)
    assert bias["positive_labels"] == ["4", "5"]
    assert set(bias["review_length"]) == {"1-15 words", "16-47 words"}
    # the length buckets hold the same rows as the categories here
    assert bias["review_length"]["16-47 words"]["AD"] == pytest.approx(1 / 3)
    assert bias["worst_category"]["value"] == "B"
    assert bias["worst_length_bucket"]["value"] == "16-47 words"


def _decide(bound: float, worst: dict | None):
    y = np.array([0, 1, 2, 3, 4] * 20)
    preds = {"model": y.copy(), "baseline": np.zeros_like(y)}
    cfg = GateConfig(min_accuracy=0.5, max_category_accuracy_gap=bound, resamples=200)
    return decide(y, preds, 5, cfg, worst_category=worst)


def test_the_gate_bounds_the_worst_category_gap_only_when_asked():
    worst = {"value": "Toys", "accuracy_gap": 0.25, "accuracy": 0.5, "rows": 40}
    assert "max_category_accuracy_gap" not in [c.name for c in _decide(-1.0, worst).checks]
    failed = _decide(0.1, worst)
    assert not failed.passed and [c.name for c in failed.failed] == ["max_category_accuracy_gap"]
    assert "worst category Toys (40 rows)" in failed.message()
    assert _decide(0.3, worst).passed
    assert _decide(0.1, None).passed  # no category with enough rows: nothing to bound
    with pytest.raises(ConfigurationError, match="at most 1"):
        GateConfig(max_category_accuracy_gap=1.5)


def test_top_words_per_class_average_over_reviews_and_skip_rare_words():
    explained = [
        [{"word": "Great", "attribution": 0.4}, {"word": "!", "attribution": 0.9}],
        [{"word": "great", "attribution": 0.2}, {"word": "price", "attribution": 0.1}],
        [{"word": "great", "attribution": 0.3}, {"word": "price", "attribution": 0.3},
         {"word": "great", "attribution": 0.1}],  # twice in one review: summed there
        [{"word": "broken", "attribution": 0.5}],
    ]  # fmt: skip
    top = top_words_per_class(explained, [4, 4, 4, 0], LABELS, top=5, min_count=2)
    assert top["5"] == [{"word": "great", "mean_attribution": pytest.approx(1.0 / 3),
                         "reviews": 3},
                        {"word": "price", "mean_attribution": pytest.approx(0.2), "reviews": 2}]  # fmt: skip
    assert top["1"] == []  # "broken" is in one review only


def test_the_report_shows_bias_and_the_global_explanation(tmp_path):
    bias = post_training_bias(Y_TRUE, Y_PRED, FACET, ["a b"] * 6, LABELS, min_rows=3)
    top = {"1": [{"word": "broken", "mean_attribution": 0.5, "reviews": 3}], "5": []}
    plot_top_words(top, tmp_path / "global_explanation.png")
    assert (tmp_path / "global_explanation.png").stat().st_size > 1000
    result = {"gate": {"message": "gate passed: ok", "checks": []}, "bias": bias,
              "global_explanation": {"rows": 6, "steps": 8, "top_words": top}}  # fmt: skip
    page = report_html(result, tmp_path)
    assert "worst product category: B (3 rows), accuracy 0.333, +0.333 below" in page
    assert "<tr style='background:#fde0dd'><td>B</td><td>3</td>" in page
    assert page.count("data:image/png;base64,") == 1  # no confusion matrix PNG in tmp_path
