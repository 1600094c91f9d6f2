"""The scoring function Spark runs on each executor: Arrow batches in, predictions out.

The model is loaded once per Python worker (Spark reuses workers across tasks) and kept in a
module-level cache, as the variant the predictor serves, through the predictor's own loader
and bucketing (``components.serve.variants``): a batch row is the online answer.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

OUTPUT_SCHEMA = (
    "review_id string, product_category string, star_rating int, label string, score float, "
    "probabilities map<string,float>, model_name string, model_version string, variant string"
)
_MODELS: dict[tuple[str, str], Any] = {}


def load_backend(uri: str, variant: str, threads: int = 0) -> Any:
    """Variant ``variant`` of the model at ``uri`` (local directory or s3:// prefix), once."""
    if (uri, variant) not in _MODELS:
        import torch

        from components.common.storage import is_s3_uri
        from components.serve.variants import load_variant
        from components.train.data import fetch_dir

        if threads:
            torch.set_num_threads(threads)
        local = uri
        if is_s3_uri(uri):  # an executor on another node fetches its own copy
            local = str(fetch_dir(uri, Path(tempfile.mkdtemp(prefix="score-model-"))))
        _MODELS[(uri, variant)] = load_variant(local, variant, threads=threads or None)
    return _MODELS[(uri, variant)]


def predict_frame(backend: Any, texts: list[str], batch_size: int) -> tuple[np.ndarray, list]:
    """Probabilities for ``texts`` in input order, in the predictor's length buckets."""
    from components.serve.variants import predict_texts

    return predict_texts(backend, texts, batch_size), backend.labels


def to_output(frame: pd.DataFrame, probs: np.ndarray, labels: list[str], name: str,
              version: str, variant: str = "") -> pd.DataFrame:  # fmt: skip
    best = probs.argmax(axis=1)
    names = np.asarray(labels)[best]
    stars = [int(x) if str(x).isdigit() else None for x in names]
    return pd.DataFrame({
        "review_id": frame["review_id"].to_numpy(),
        "product_category": frame["product_category"].to_numpy(),
        "star_rating": pd.array(stars, dtype="Int32"),
        "label": names,
        "score": probs[np.arange(len(probs)), best],
        "probabilities": [dict(zip(labels, map(float, row), strict=True)) for row in probs],
        "model_name": name,
        "model_version": version,
        "variant": variant,
    })  # fmt: skip


def score_batches(
    batches: Iterator[pd.DataFrame], uri: str, name: str, version: str, batch_size: int,
    threads: int, variant: str,
) -> Iterator[pd.DataFrame]:  # fmt: skip
    """The ``mapInPandas`` function: one output frame per Arrow batch."""
    backend = load_backend(uri, variant, threads)
    for frame in batches:
        if frame.empty:
            continue
        probs, labels = predict_frame(backend, frame["review_body"].tolist(), batch_size)
        yield to_output(frame, probs, labels, name, version, variant)
