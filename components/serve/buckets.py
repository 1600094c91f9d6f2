"""How texts are cut into forward passes: length buckets with bounded padding.

The predictor's batcher (``components.serve.batching``) and the offline callers (the evaluate
step's variants, batch scoring: ``components.serve.variants.predict_texts``) share it, so a
text is padded the same way online and in batch. No KServe import: the Spark and train images
use it without the model server.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def plan_buckets(lengths: Sequence[int], max_batch_size: int, max_padding: float = 0.25,
                 min_bucket: int = 4) -> list[np.ndarray]:  # fmt: skip
    """Indices of ``lengths`` grouped for forward passes: sorted by length, cut into buckets.

    A bucket grows (in increasing length) while it holds at most ``max_batch_size`` texts and
    its padded size (texts x longest) stays within ``1 + max_padding`` times its real tokens;
    a bucket smaller than ``min_bucket`` texts keeps growing anyway (a forward pass has a
    fixed cost that a few padded positions do not outweigh).
    """
    order = np.argsort(np.asarray(lengths), kind="stable")
    buckets: list[list[int]] = []
    current: list[int] = []
    real = 0
    for i in order:
        n = int(lengths[i])
        if current:
            padded = (len(current) + 1) * n
            too_wasteful = padded > (1 + max_padding) * (real + n) and len(current) >= min_bucket
            if len(current) >= max_batch_size or too_wasteful:
                buckets.append(current)
                current, real = [], 0
        current.append(int(i))
        real += n
    if current:
        buckets.append(current)
    return [np.array(b) for b in buckets]


def pad(
    seqs: Sequence[Sequence[int]], pad_id: int, multiple: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """``input_ids`` and ``attention_mask`` [n, L], L the longest rounded up to ``multiple``."""
    longest = max(len(s) for s in seqs)
    width = math.ceil(longest / multiple) * multiple
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = s
        mask[row, : len(s)] = 1
    return ids, mask
