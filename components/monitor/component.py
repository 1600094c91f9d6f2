"""KFP interface of the monitor stage: report, figures, and the retrain decision as outputs."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Metrics, Output

from components.common.images import image


@dsl.component(base_image=image("spark"), install_kfp_package=False)
def monitor(
    report: Output[HTML],
    summary: Output[Artifact],
    metrics: Output[Metrics],
    model_version: str = "",
    window_hours: float = 24.0,
    max_property_drift: float = 0.2,
    max_label_drift: float = 0.2,
    confidence: float = 0.7,
    max_low_confidence_share: float = 0.3,
    min_records: int = 200,
    min_labelled: int = 200,
) -> NamedTuple("Outputs", [("retrain", bool), ("reasons", str)]):  # noqa: F821 (KFP)
    """Captured traffic vs the serving model's training data; says whether to retrain."""
    import shutil
    import tempfile
    from collections import namedtuple
    from pathlib import Path

    from components.common.artifacts import write_metrics_file
    from components.common.logs import configure_logging
    from components.monitor.drift import Thresholds
    from components.monitor.job import MonitorConfig, print_decision, run_monitor

    configure_logging()
    out = Path(tempfile.mkdtemp(prefix="monitor-"))
    result = run_monitor(MonitorConfig(
        output_dir=str(out), model_version=model_version, window_hours=window_hours,
        thresholds=Thresholds(max_property_drift, max_label_drift, confidence,
                              max_low_confidence_share, min_records, min_labelled),
    ))  # fmt: skip
    print_decision(result)
    shutil.copy(out / "report.html", report.path)
    shutil.copy(out / "monitor.json", summary.path)
    summary.metadata.update({"verdict": result["verdict"]["status"],
                             "model_version": result["model_version"]})  # fmt: skip
    metrics.log_metric("captured_predictions", result["captured_predictions"])
    metrics.log_metric("new_labelled_rows", result["new_labelled_rows"])
    for key, value in result["confidence"].items():
        metrics.log_metric(key, value)
    for column, score in result["drift"].items():
        metrics.log_metric(f"drift_{column}", score["score"])
    write_metrics_file(metrics)
    outputs = namedtuple("Outputs", ["retrain", "reasons"])
    return outputs(bool(result["verdict"]["retrain"]), "; ".join(result["verdict"]["reasons"]))
