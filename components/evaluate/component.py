"""KFP interface of the evaluate stage: metrics, confusion matrix, gate decision, registry."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components.common.images import image


@dsl.component(base_image=image("train"), install_kfp_package=False)
def evaluate(
    model: Input[Model],
    train_data: Input[Dataset],
    test_data: Input[Dataset],
    ingest_stats: Input[Artifact],
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    evaluation: Output[Artifact],
    report: Output[HTML],
    mlflow_run_id: str,
    kfp_run_id: str,
    min_accuracy: float,
    gate_metric: str,
    min_gain_over_baseline: float,
    baseline_test: str,
    max_regression: float,
    max_category_accuracy_gap: float,
    variant_tolerance: float,
    register: bool = True,
) -> NamedTuple(
    "Outputs",
    [("deploy", bool), ("registered_version", str), ("model_storage_uri", str),
     ("accuracy", float), ("gate_message", str)],
):  # fmt: skip
    """Score the model, a TF-IDF baseline and the champion; register on a passing gate.

    The gate's figures have no defaults here: they live in ``GateConfig`` (the pipeline's
    parameters default to its fields).
    """
    import os
    import shutil
    import tempfile
    from collections import namedtuple
    from pathlib import Path

    from components.common.logs import configure_logging
    from components.evaluate.gate import GateConfig
    from components.evaluate.job import EvalConfig, bias_figures, run_evaluation, variant_figures
    from components.evaluate.variants import VariantConfig

    configure_logging()
    data = Path(tempfile.mkdtemp(prefix="eval-data-"))
    os.symlink(train_data.path, data / "train")
    os.symlink(test_data.path, data / "test")
    shutil.copy(ingest_stats.path, data / "stats.json")
    out = Path(tempfile.mkdtemp(prefix="eval-out-"))
    result = run_evaluation(
        EvalConfig(
            model_dir=model.path, data=str(data), output_dir=str(out),
            model_uri=model.metadata.get("mlflow_model_uri") or "", mlflow_run_id=mlflow_run_id,
            register=register, kfp_run_id=kfp_run_id, report=evaluation.uri,
            gate=GateConfig(min_accuracy=min_accuracy, metric=gate_metric,
                            min_gain_over_baseline=min_gain_over_baseline,
                            baseline_test=baseline_test, max_regression=max_regression,
                            max_category_accuracy_gap=max_category_accuracy_gap),
            variants=VariantConfig(tolerance=variant_tolerance),
        )
    )  # fmt: skip
    shutil.copy(out / "evaluation.json", evaluation.path)
    ours = result["model"]
    confusion.log_confusion_matrix(ours["labels"], ours["confusion_matrix"])
    metrics.log_metric("accuracy", ours["accuracy"])
    metrics.log_metric("macro_f1", ours["macro_f1"])
    metrics.log_metric("ece", ours["ece"])
    metrics.log_metric("baseline_accuracy", result["baseline"]["accuracy"])
    metrics.log_metric("baseline_macro_f1", result["baseline"]["macro_f1"])
    if result["champion"]:
        metrics.log_metric("champion_accuracy", result["champion"]["metrics"]["accuracy"])
        metrics.log_metric("champion_macro_f1", result["champion"]["metrics"]["macro_f1"])
    for other, diff in result["comparisons"].items():
        metrics.log_metric(f"{diff['metric']}_diff_vs_{other}", diff["difference"])
        metrics.log_metric(f"{diff['metric']}_diff_vs_{other}_ci_low", diff["low"])
        metrics.log_metric(f"{diff['metric']}_diff_vs_{other}_ci_high", diff["high"])
    metrics.log_metric("gate_passed", float(result["gate"]["passed"]))
    for key, value in bias_figures(result["bias"]).items():
        if key.startswith("worst_"):
            metrics.log_metric(key, value)
    for key, value in variant_figures(result.get("variants")).items():
        metrics.log_metric(key, value)
    shutil.copy(out / "report.html", report.path)
    evaluation.metadata.update({"gate": result["gate"]["message"]})
    outputs = namedtuple(
        "Outputs",
        ["deploy", "registered_version", "model_storage_uri", "accuracy", "gate_message"],
    )
    return outputs(
        bool(result["gate"]["passed"] and result["registered_version"]),
        result["registered_version"] or "", result["model_storage_uri"] or "",
        float(ours["accuracy"]), result["gate"]["message"],
    )  # fmt: skip
