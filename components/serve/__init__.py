"""Serve: a KServe predictor with dynamic batching, V1 and Open Inference Protocol.

``ReviewClassifierModel`` is imported on first use: batch scoring and the evaluate step import
``components.serve.variants`` in images without KServe.
"""

from typing import Any

__all__ = ["ReviewClassifierModel"]


def __getattr__(name: str) -> Any:
    if name == "ReviewClassifierModel":
        from components.serve.model import ReviewClassifierModel

        return ReviewClassifierModel
    raise AttributeError(name)
