"""Behavioural checks (reported, not gating): invariance and directional expectations."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

NEUTRAL_SUFFIX = " I bought it on a Tuesday and it came in a box."
NEGATIVE_SUFFIX = " Update: it broke after one day and is a complete waste of money."


def expected_rating(probs: np.ndarray, stars: np.ndarray) -> np.ndarray:
    return probs @ stars


def invariance(
    predict: Callable[[list[str]], np.ndarray], texts: list[str], threshold: float = 0.1
) -> dict:
    """Appending neutral text should not change the predicted class (beyond ``threshold``)."""
    before, after = predict(texts), predict([t + NEUTRAL_SUFFIX for t in texts])
    changed = float((before.argmax(1) != after.argmax(1)).mean())
    shift = float(np.abs(after - before).max(axis=1).mean())
    return {"name": "invariance_neutral_suffix", "changed_share": changed,
            "mean_max_prob_shift": shift, "threshold": threshold, "passed": changed <= threshold,
            "rows": len(texts)}  # fmt: skip


def directional(
    predict: Callable[[list[str]], np.ndarray], texts: list[str], labels: list[str],
    min_share: float = 0.8,
) -> dict:  # fmt: skip
    """A clearly negative addition should lower the expected star rating."""
    if not all(name.isdigit() for name in labels):
        return {"name": "directional_negative_suffix", "skipped": "labels are not star ratings"}
    stars = np.array([int(n) for n in labels], dtype=float)
    before = expected_rating(predict(texts), stars)
    after = expected_rating(predict([t + NEGATIVE_SUFFIX for t in texts]), stars)
    share = float((after < before).mean())
    return {"name": "directional_negative_suffix", "lowered_share": share,
            "mean_drop": float((before - after).mean()), "min_share": min_share,
            "passed": share >= min_share, "rows": len(texts)}  # fmt: skip
