"""Score: star ratings for every review under a prefix, with a registered model, on Spark."""

from components.score.job import ScoreConfig, run_scoring

__all__ = ["ScoreConfig", "run_scoring"]
