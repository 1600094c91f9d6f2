"""Serve: a KServe predictor with dynamic batching, V1 and Open Inference Protocol."""

from components.serve.model import ReviewClassifierModel

__all__ = ["ReviewClassifierModel"]
