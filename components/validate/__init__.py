"""Validate: deepchecks suites, Deequ-style constraints, pre-training bias, and a gate."""

from components.validate.job import ValidateConfig, run_validation

__all__ = ["ValidateConfig", "run_validation"]
