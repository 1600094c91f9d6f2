import numpy as np
import pandas as pd
import pytest

from components.validate.bias import class_imbalance, facet_bias, js_divergence, kl_divergence
from components.validate.constraints import deequ_constraints, leakage_by_id, short_texts
from components.validate.report import drop_repeated_plotly


def test_ci_and_dpl_against_values_computed_by_hand():
    # facet "A": 2 rows (labels 4, 0), rest: 6 rows (labels 4, 4, 3, 0, 1, 2); positive = {3, 4}
    df = pd.DataFrame({"cat": ["A", "A", "B", "B", "B", "C", "C", "C"],
                       "label": [4, 0, 4, 4, 3, 0, 1, 2]})  # fmt: skip
    result = facet_bias(df, "cat", "label", positive={3, 4}, labels=[0, 1, 2, 3, 4])
    a = result["A"]
    assert a["rows"] == 2
    assert a["CI"] == pytest.approx((6 - 2) / (6 + 2))  # 0.5
    assert a["DPL"] == pytest.approx(3 / 6 - 1 / 2)  # q_rest 0.5, q_A 0.5 -> 0
    b = result["B"]
    assert b["CI"] == pytest.approx((5 - 3) / 8)
    assert b["DPL"] == pytest.approx(1 / 5 - 3 / 3)  # q_rest = 1/5 (one 4 in A), q_B = 1
    assert b["KL"] > 0 and 0 < b["JS"] <= np.log(2)
    assert class_imbalance(10, 10) == 0.0


def test_divergences_are_zero_for_equal_distributions():
    assert kl_divergence([1, 2, 3], [2, 4, 6]) == pytest.approx(0.0, abs=1e-9)
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(np.log(2))


def _split(ids, **cols) -> pd.DataFrame:
    n = len(ids)
    base = {"review_id": ids, "star_rating": [5] * n, "marketplace": ["US"] * n,
            "helpful_votes": [0] * n, "total_votes": [1] * n, "review_body": ["fine text"] * n}  # fmt: skip
    return pd.DataFrame({**base, **cols})


def test_deequ_constraints_name_each_violation():
    splits = {
        "train": _split(
            ["a", "b", "b"],
            star_rating=[5, 7, 1],
            marketplace=["US", "UK", "US"],
            helpful_votes=[0, -1, 3],
            total_votes=[1, 0, 2],
        ),  # fmt: skip
        "test": _split(["c"]),
    }
    got = {o.name: o for o in deequ_constraints(splits, ("US",), min_rows=10)}
    assert not got["review_id_unique"].passed
    assert not got["star_rating_in_range"].passed and "1 of 4" in got["star_rating_in_range"].detail
    assert not got["marketplace_in_set"].passed
    assert not got["helpful_votes_non_negative"].passed
    assert not got["total_votes_ge_helpful_votes"].passed
    assert not got["min_row_count_train"].passed
    assert got["review_id_complete"].passed


def test_leakage_and_short_texts():
    leak = leakage_by_id({"train": _split(["a", "b"]), "test": _split(["b", "c"])})
    assert not leak.passed and "train/test: 1" in leak.detail
    short = short_texts({"train": _split(["a", "b"], review_body=["", "ok text"])}, 3, 0.01)
    assert not short.passed and short.value == 0.5


def test_repeated_plotly_bundles_are_dropped():
    bundle = "<script type='text/javascript'>/** plotly.js v4.1.1 */ var x;</script>"
    page = f"<html><body>{bundle}<div>a</div>{bundle}<script>other()</script>{bundle}</body></html>"
    out = drop_repeated_plotly(page)
    assert out.count("plotly.js v4.1.1") == 1 and "other()" in out and "<div>a</div>" in out
