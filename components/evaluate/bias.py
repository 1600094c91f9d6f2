"""Post-training bias per facet (product category, review length), as SageMaker Clarify reports it.

For a facet value d (one category) against all other rows a, on the model's predictions:
- accuracy of d, and recall per star within d;
- DPPL, difference in positive proportions in predicted labels: q_a - q_d, where q is the share
  of rows predicted positive (4-5 stars, or the ``positive`` sentiment class);
- DI, disparate impact: q_d / q_a (1 is parity; None when q_a is 0);
- AD, accuracy difference: accuracy_a - accuracy_d (positive: the model is worse on d).
The pre-training figures on the labels (CI, DPL, KL, JS) are the validate step's
(``components/validate/bias.py``); these are their counterparts on the predictions.

The worst category is the one with the largest AD among those with at least ``min_rows`` test
rows (fewer rows make an accuracy too noisy to act on); the gate may bound it.
"""

from __future__ import annotations

import numpy as np

POSITIVE_NAMES = ("4", "5", "positive")
# word-count buckets: the model reads 64 word pieces, about 45 words of a review
LENGTH_EDGES = (16, 48)


def positive_ids(labels: list[str]) -> list[int]:
    """Class ids counted as a positive prediction (4-5 stars, or ``positive``)."""
    return [i for i, name in enumerate(labels) if name in POSITIVE_NAMES]


def length_bucket(text: str, edges: tuple[int, ...] = LENGTH_EDGES) -> str:
    """``"1-15 words"``, ``"16-47 words"``, ``"48+ words"`` (for the default edges)."""
    n = len(str(text).split())
    lower = 1
    for edge in edges:
        if n < edge:
            return f"{lower}-{edge - 1} words"
        lower = edge
    return f"{lower}+ words"


def _group(y: np.ndarray, pred: np.ndarray, positive: np.ndarray,
           labels: list[str]) -> tuple[float, float, dict[str, float | None]]:  # fmt: skip
    accuracy = float((y == pred).mean()) if len(y) else 0.0
    share = float(positive[pred].mean()) if len(y) else 0.0
    recall = {name: (float((pred[y == i] == i).mean()) if (y == i).any() else None)
              for i, name in enumerate(labels)}  # fmt: skip
    return accuracy, share, recall


def facet_metrics(y_true: np.ndarray, y_pred: np.ndarray, facet: np.ndarray,
                  labels: list[str]) -> dict[str, dict]:  # fmt: skip
    """Per facet value: rows, accuracy, recall per class, DPPL, DI and AD against the rest."""
    y, pred, facet = np.asarray(y_true, int), np.asarray(y_pred, int), np.asarray(facet)
    positive = np.zeros(len(labels), dtype=bool)
    positive[positive_ids(labels)] = True
    out = {}
    for value in sorted({str(v) for v in facet}):
        d = facet.astype(str) == value
        acc_d, q_d, recall = _group(y[d], pred[d], positive, labels)
        acc_a, q_a, _ = _group(y[~d], pred[~d], positive, labels)
        rest = bool((~d).any())
        out[value] = {
            "rows": int(d.sum()),
            "accuracy": acc_d,
            "recall": recall,
            "predicted_positive_share": q_d,
            "DPPL": q_a - q_d if rest else 0.0,
            "DI": (q_d / q_a if q_a else None) if rest else 1.0,
            "AD": acc_a - acc_d if rest else 0.0,
        }
    return out


def worst_gap(facets: dict[str, dict], min_rows: int) -> dict | None:
    """The facet value with the largest accuracy difference among those with ``min_rows``."""
    eligible = [(v, m) for v, m in facets.items() if m["rows"] >= min_rows]
    if not eligible:
        return None
    value, m = max(eligible, key=lambda item: (item[1]["AD"], item[0]))
    return {"value": value, "accuracy_gap": m["AD"], "accuracy": m["accuracy"], "rows": m["rows"]}


def post_training_bias(y_true: np.ndarray, y_pred: np.ndarray, categories: np.ndarray,
                       texts: list[str], labels: list[str],
                       min_rows: int = 30) -> dict:  # fmt: skip
    """Both facets and the worst category, as evaluation.json records them."""
    by_category = facet_metrics(y_true, y_pred, categories, labels)
    by_length = facet_metrics(y_true, y_pred, np.array([length_bucket(t) for t in texts]), labels)
    return {
        "positive_labels": [labels[i] for i in positive_ids(labels)],
        "min_rows": min_rows,
        "product_category": by_category,
        "review_length": by_length,
        "worst_category": worst_gap(by_category, min_rows),
        # what a small test split shows when no category reaches min_rows (not gated)
        "worst_category_any_size": worst_gap(by_category, 1),
        "worst_length_bucket": worst_gap(by_length, min_rows),
    }
