"""The scoring function Spark runs on each executor: Arrow batches in, predictions out.

The classifier is loaded once per Python worker (Spark reuses workers across tasks) and kept
in a module-level cache; each Arrow batch is sorted by text length and cut into model batches,
so padding stays within similar lengths.
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
    "probabilities map<string,float>, model_name string, model_version string"
)
_MODELS: dict[tuple[str, str], Any] = {}


def load_classifier(uri: str, threads: int = 0, precision: str = "auto") -> Any:
    """A Classifier for ``uri`` (local directory or s3:// prefix), once per process."""
    if (uri, precision) not in _MODELS:
        import torch

        from components.common.inference import Classifier
        from components.common.storage import is_s3_uri
        from components.train.data import fetch_dir

        if threads:
            torch.set_num_threads(threads)
        local = uri
        if is_s3_uri(uri):  # an executor on another node fetches its own copy
            local = str(fetch_dir(uri, Path(tempfile.mkdtemp(prefix="score-model-"))))
        _MODELS[(uri, precision)] = Classifier(local, precision=precision)
    return _MODELS[(uri, precision)]


def predict_frame(classifier: Any, texts: list[str], batch_size: int) -> tuple[np.ndarray, list]:
    """Probabilities for ``texts`` in input order, computed in length-sorted batches."""
    order = np.argsort([len(t) for t in texts], kind="stable")
    probs = np.zeros((len(texts), len(classifier.labels)), dtype=np.float32)
    for start in range(0, len(texts), batch_size):
        index = order[start : start + batch_size]
        probs[index] = classifier.probabilities([texts[i] for i in index]).numpy()
    return probs, classifier.labels


def to_output(frame: pd.DataFrame, probs: np.ndarray, labels: list[str], name: str,
              version: str) -> pd.DataFrame:  # fmt: skip
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
    })  # fmt: skip


def score_batches(batches: Iterator[pd.DataFrame], uri: str, name: str, version: str,
                  batch_size: int, threads: int,
                  precision: str = "auto") -> Iterator[pd.DataFrame]:  # fmt: skip
    """The ``mapInPandas`` function: one output frame per Arrow batch."""
    classifier = load_classifier(uri, threads, precision)
    for frame in batches:
        if frame.empty:
            continue
        probs, labels = predict_frame(classifier, frame["review_body"].tolist(), batch_size)
        yield to_output(frame, probs, labels, name, version)
