"""Evaluation against the real MLflow server: registry versions, aliases, tags, champion."""

import json

import mlflow
import pytest

from components.common.registry import CHAMPION, promote, version_by_alias
from components.common.settings import Settings
from components.evaluate.gate import GateConfig
from components.evaluate.job import EvalConfig, run_evaluation
from components.evaluate.variants import VariantConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]
NAME = "eval-tests"


def _config(trained, out, variants: VariantConfig | None = None, **gate) -> EvalConfig:
    """Variants off unless asked for: one test builds them (ONNX exports take seconds)."""
    results = trained["results"]
    return EvalConfig(
        model_dir=str(trained["model_dir"]), data=str(trained["data"]), output_dir=str(out),
        model_uri=results["mlflow_model_uri"], mlflow_run_id=results["mlflow_run_id"],
        registered_model_name=NAME, kfp_run_id="kfp-run-1",
        # The fixture's model is a toy BERT from scratch (150 steps of 32): these tests are
        # about registration and the champion, not its margin. It sees 4,800 examples where
        # TF-IDF fits every training row (no undersampling any more), and trails it by about 5
        # points of accuracy, so the baseline may be up to 10 points ahead here; the gate's
        # comparisons and the default metric, macro-F1, are covered by tests/unit/test_gate.py.
        gate=GateConfig(**{"min_accuracy": 0.45, "baseline_test": "non_inferiority",
                           "min_gain_over_baseline": -0.10, "metric": "accuracy",
                           **gate}),  # fmt: skip
        variants=variants,
    )  # fmt: skip


def test_failing_gate_does_not_register_and_says_why(trained, tmp_path, stack):
    result = run_evaluation(_config(trained, tmp_path, min_accuracy=0.99))
    assert result["gate"]["passed"] is False
    assert "min_accuracy 0.9900" in result["gate"]["message"]
    assert result["registered_version"] is None
    assert version_by_alias(NAME, "challenger") is None


def test_passing_run_registers_with_lineage_then_champion_is_compared(
    trained, tmp_path, stack, storage
):
    first = run_evaluation(_config(trained, tmp_path / "a", VariantConfig(bf16=False)))
    assert first["gate"]["passed"] is True, first["gate"]["message"]
    assert first["champion"] is None
    assert first["baseline"]["accuracy"] > 0.5  # the baseline was trained and scored
    saved = json.loads((tmp_path / "a" / "evaluation.json").read_text())
    assert saved["metrics"]["accuracy"]["value"] == pytest.approx(first["model"]["accuracy"])
    assert (tmp_path / "a" / "confusion_matrix.png").stat().st_size > 1000
    version = first["registered_version"]
    client = mlflow.MlflowClient()
    mv = client.get_model_version(NAME, version)
    assert mv.tags["kfp_run_id"] == "kfp-run-1"
    assert mv.tags["training_run_id"] == trained["results"]["mlflow_run_id"]
    stats = json.loads((trained["data"] / "stats.json").read_text())
    assert mv.tags["data_version"] == stats["data_version"] and len(stats["data_version"]) == 16
    # the image tag these steps run (IMAGE_TAG, the project version by default)
    assert mv.tags["code_version"] == Settings.from_env().image_tag
    # the held-out reviews the deploy step will send, with this model's answers
    assert len(first["smoke_set"]) == 16 and {"text", "label", "score"} <= set(
        first["smoke_set"][0]
    )
    assert client.get_model_version_by_alias(NAME, "challenger").version == version
    # the storage URI KServe gets is the save_pretrained directory in S3
    uri = first["model_storage_uri"]
    keys = [o.key for o in storage.list_objects(uri + "/")]
    assert any(k.endswith("config.json") for k in keys) and any(
        k.endswith("tokenizer.json") for k in keys
    )
    run = client.get_run(trained["results"]["mlflow_run_id"])
    assert run.data.metrics["test_accuracy"] == pytest.approx(first["model"]["accuracy"])
    # post-training bias per category and length, the global explanation, the HTML report
    bias = saved["bias"]
    categories = bias["product_category"]
    assert sum(m["rows"] for m in categories.values()) == first["model"]["rows"]
    assert sum(m["rows"] for m in bias["review_length"].values()) == first["model"]["rows"]
    worst = bias["worst_category_any_size"]
    assert worst["accuracy_gap"] == pytest.approx(max(m["AD"] for m in categories.values()))
    explanation = saved["global_explanation"]
    assert explanation["rows"] == min(200, first["model"]["rows"])
    assert set(explanation["top_words"]) == set(first["model"]["labels"])
    assert any(explanation["top_words"].values())
    page = (tmp_path / "a" / "report.html").read_text()
    assert "Post-training bias" in page and page.count("data:image/png;base64,") == 2
    if bias["worst_category"]:
        assert run.data.metrics["worst_category_accuracy_gap"] == pytest.approx(
            bias["worst_category"]["accuracy_gap"]
        )
    some = next(iter(categories))
    assert run.data.metrics[f"category_accuracy.{some}"] == pytest.approx(
        categories[some]["accuracy"]
    )
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/report.html", "evaluation/global_explanation.png",
            "evaluation/variants.json"} <= logged  # fmt: skip
    # the serving variants: judged on the same rows, stored with the registered version
    variants = saved["variants"]["variants"]
    assert set(variants) == {"torch-fp32", "onnx-fp32", "onnx-int8"}
    assert variants["onnx-fp32"]["agreement_with_fp32"] >= 0.99
    assert variants["onnx-fp32"]["accuracy_vs_fp32"]["rows"] == first["model"]["rows"]
    assert saved["serving"]["cpu"]["variant"] in ("onnx-int8", "onnx-fp32")
    assert mv.tags["serving_variant.cpu"] == saved["serving"]["cpu"]["variant"]
    assert mv.tags["variant.onnx-fp32"].startswith("eligible")
    stored = json.loads(storage.get_bytes(f"{uri}/variants.json"))
    assert stored["variants"]["onnx-int8"]["sha256"] == variants["onnx-int8"]["sha256"]
    files = sorted(o.key.rsplit("/", 1)[1] for o in storage.list_objects(uri + "/variants/"))
    assert files == ["onnx-fp32.onnx", "onnx-int8.onnx"]
    assert run.data.metrics["variant_agreement_with_fp32.onnx-fp32"] >= 0.99
    assert "Serving variants" in page
    # the held-out reviews carry each variant's own answer, for the canary of that variant
    assert set(first["smoke_set"][0]["variants"]) == set(variants)

    promote(NAME, version)
    assert version_by_alias(NAME, CHAMPION).version == version
    second = run_evaluation(_config(trained, tmp_path / "b"))
    assert second["champion"]["version"] == version
    assert second["champion"]["metrics"]["accuracy"] == pytest.approx(first["model"]["accuracy"])
    names = [c["name"] for c in second["gate"]["checks"]]
    assert "no_regression_vs_champion" in names and second["gate"]["passed"]
    assert second["comparisons"]["champion"]["rows"] == second["model"]["rows"]
    assert second["comparisons"]["champion"]["difference"] == pytest.approx(0.0)


def test_champion_whose_files_are_gone_is_no_usable_champion(
    trained, tmp_path, stack, storage, caplog
):
    """A registry that outlived its artifact store (a restarted local S3) must not crash."""
    from components.common.registry import model_dir_uri, register
    from components.train.mlflow_model import log_model

    # A copy of its own: the trained model's files are shared with other tests' versions.
    mlflow.set_experiment("eval-tests-gone")
    with mlflow.start_run():
        copy = log_model(trained["model_dir"]).model_uri
    version = register(copy, NAME, {"purpose": "files deleted below"})
    promote(NAME, version)
    assert storage.delete_prefix(model_dir_uri(copy) + "/") > 0
    with caplog.at_level("WARNING"):
        result = run_evaluation(_config(trained, tmp_path / "b"))
    assert result["champion"] is None and result["gate"]["passed"], result["gate"]["message"]
    assert "no_regression_vs_champion" not in [c["name"] for c in result["gate"]["checks"]]
    warning = next(r.getMessage() for r in caplog.records if "cannot be loaded" in r.getMessage())
    assert f"{NAME} v{version}" in warning and "no usable champion" in warning
