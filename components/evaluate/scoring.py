"""Evaluation metrics on one prediction set: overall, per class, per slice, calibration."""

from __future__ import annotations

import numpy as np

from components.common.metrics import confusion_matrix, metrics_from_confusion


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, bins: int = 10) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def score(
    y_true: np.ndarray,
    probs: np.ndarray,
    labels: list[str],
    slices: np.ndarray | None = None,
) -> dict:
    """Every figure the evaluation reports for one model on one split."""
    y_true = np.asarray(y_true, dtype=int)
    y_pred = probs.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, len(labels))
    base = metrics_from_confusion(cm)
    out: dict = {
        "accuracy": base["accuracy"],
        "macro_f1": base["macro_f1"],
        "per_class": {
            name: {
                "precision": base["precision"][i],
                "recall": base["recall"][i],
                "f1": base["f1"][i],
                "support": int(cm[i].sum()),
            }
            for i, name in enumerate(labels)
        },  # fmt: skip
        "confusion_matrix": cm.tolist(),
        "labels": labels,
        "ece": expected_calibration_error(probs, y_true),
        "rows": int(len(y_true)),
    }
    if all(name.isdigit() for name in labels):
        stars = np.array([int(n) for n in labels])
        out["within_one_star_accuracy"] = float((abs(stars[y_pred] - stars[y_true]) <= 1).mean())
    if slices is not None:
        out["slices"] = {
            str(value): {"accuracy": float((y_pred[mask] == y_true[mask]).mean()),
                         "rows": int(mask.sum())}
            for value in sorted(set(slices))
            if (mask := slices == value).any()
        }  # fmt: skip
    return out
