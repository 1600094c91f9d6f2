"""The labels a run trains on: the ingest step's label map, and per-class loss weights."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from components.common.schema import LabelMap, label_map_for

logger = logging.getLogger(__name__)


def load_label_map(data_dir: Path) -> LabelMap:
    """The label map the ingest step wrote (stats.json), never a hard-coded one."""
    stats = data_dir / "stats.json"
    if stats.exists():
        return LabelMap.from_dict(json.loads(stats.read_text())["label_map"])
    logger.warning("%s not found; assuming 5 star-rating classes", stats)
    return label_map_for("star_rating")


def class_weights(labels: np.ndarray, num_labels: int, mode: str = "balanced") -> np.ndarray:
    """Per-class loss weights whose row-weighted mean is 1; 0 for classes with no rows.

    ``balanced``: ``rows / (classes x class rows)`` (sklearn's), every class weighs the same in
    total. ``sqrt``: proportional to ``1 / sqrt(class rows)``, halfway (on a log scale) between
    no weighting and ``balanced``: rare stars count more without giving up the common ones.
    """
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=num_labels).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_labels)
    if mode == "sqrt":
        weights[present] = counts.sum() / (np.sqrt(counts[present]) * np.sqrt(counts).sum())
    else:
        weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights
