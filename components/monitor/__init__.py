"""Monitor: captured traffic vs the training data, the review queue, the retrain decision."""

from components.monitor.job import MonitorConfig, run_monitor

__all__ = ["MonitorConfig", "run_monitor"]
