"""Evaluate and register: metrics, a TF-IDF baseline, champion/challenger gate, MLflow registry."""

from components.evaluate.job import EvalConfig, run_evaluation

__all__ = ["EvalConfig", "run_evaluation"]
