"""KFP interface of the validate stage: the report as HTML, a JSON summary, and Metrics."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Output

from components.common.images import image


@dsl.component(base_image=image("spark"), install_kfp_package=False)
def validate(
    train_data: Input[Dataset],
    validation_data: Input[Dataset],
    test_data: Input[Dataset],
    ingest_stats: Input[Artifact],
    report: Output[HTML],
    summary: Output[Artifact],
    metrics: Output[Metrics],
    validation_mode: str = "fail",
    max_rows: int = 20000,
    min_rows: int = 500,
):
    """Deepchecks suites, Deequ-style constraints and bias figures; fails on a failed check."""
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from components.common.artifacts import write_metrics_file
    from components.common.logs import configure_logging
    from components.validate.job import ValidateConfig, run_validation

    configure_logging()
    data = Path(tempfile.mkdtemp(prefix="validate-data-"))
    for name, artifact in (
        ("train", train_data),
        ("validation", validation_data),
        ("test", test_data),
    ):
        os.symlink(artifact.path, data / name)
    shutil.copy(ingest_stats.path, data / "stats.json")
    out = Path(tempfile.mkdtemp(prefix="validate-out-"))
    # The report is written (and copied out) before the gate decides.
    config = ValidateConfig(str(data), str(out), validation_mode, max_rows, min_rows=min_rows,
                            mlflow=bool(os.environ.get("MLFLOW_TRACKING_URI")))  # fmt: skip
    try:
        result = run_validation(config)
    finally:
        if (out / "report.html").exists():
            shutil.copy(out / "report.html", report.path)
        if (out / "summary.json").exists():
            shutil.copy(out / "summary.json", summary.path)
    metrics.log_metric("checks_failed", len(result["failed"]))
    metrics.log_metric("checks_total", len(result["checks"]))
    for name, figures in result["bias"].items():
        metrics.log_metric(f"bias_CI_{name}", figures["CI"])
        metrics.log_metric(f"bias_DPL_{name}", figures["DPL"])
    write_metrics_file(metrics)
