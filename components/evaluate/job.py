"""The evaluate step: score the trained model, a baseline and the champion; gate; register.

Usage: ``python -m components.evaluate --model-dir DIR --data DIR --output-dir DIR
[--model-uri models:/m-...] [--mlflow-run-id ID] [--min-accuracy 0.45] ...``
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from components.common import registry
from components.common.cli import run_stage
from components.common.errors import PlatformError
from components.common.inference import Classifier
from components.common.schema import LabelMap
from components.common.settings import Settings
from components.evaluate import baseline, behaviour
from components.evaluate.advice import advise, read_train_results
from components.evaluate.bias import post_training_bias
from components.evaluate.explanations import global_explanation, plot_top_words
from components.evaluate.gate import BASELINE_TESTS, GateConfig, decide
from components.evaluate.paired import METRICS
from components.evaluate.plots import plot_confusion
from components.evaluate.report import report_html
from components.evaluate.scoring import score
from components.evaluate.variants import VariantConfig, public, record_variants
from components.serve.variants import TARGETS, VARIANTS_DIR, VARIANTS_FILE, choose_variant

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalConfig:
    """Inputs and knobs of one evaluation."""

    model_dir: str
    data: str
    output_dir: str
    model_uri: str = ""
    mlflow_run_id: str = ""
    registered_model_name: str = ""
    register: bool = True
    gate: GateConfig = field(default_factory=GateConfig)
    kfp_run_id: str = "local"
    behaviour_rows: int = 200
    batch_size: int = 256
    report: str = ""  # where evaluation.json is kept for the user (default: output_dir's)
    explain_rows: int = 200  # test reviews explained for the global explanation (0: none)
    explain_steps: int = 8
    variants: VariantConfig | None = field(default_factory=VariantConfig)  # None: not built


def predict_probs(classifier: Classifier, texts: list[str], batch_size: int) -> np.ndarray:
    parts = [classifier.probabilities(texts[i : i + batch_size]).numpy()
             for i in range(0, len(texts), batch_size)]  # fmt: skip
    return np.concatenate(parts) if parts else np.zeros((0, len(classifier.labels)))


def _load_data(data: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    stats = json.loads((data / "stats.json").read_text())
    columns = ["review_body", "label", "product_category"]
    return (pd.read_parquet(data / "train", columns=columns),
            pd.read_parquet(data / "test", columns=columns), stats)  # fmt: skip


def smoke_set(texts: list[str], y: np.ndarray, probs: np.ndarray, labels: list[str],
              size: int = 16, variants: dict | None = None,
              test_rows: list[int] | None = None) -> list[dict]:  # fmt: skip
    """Up to ``size`` test reviews with the label and confidence the evaluated model gave each.

    Taken round-robin over the true labels, so every class is asked; the deploy step sends them
    to the new revision and rolls it back when its answers disagree. ``variants`` (the
    ``variants.json`` record) adds each variant's own label per review: a revision serving a
    variant is held to what that variant answered in evaluation; ``test_rows`` are the rows
    its predictions are for (a sample of the test split), from which the reviews are then taken.
    """
    scored = None  # the test rows the variants were scored on (all, or a sample)
    if variants and (names := [n for n, v in variants.items() if "predictions" in v]):
        scored = range(len(variants[names[0]]["predictions"]))
    index = list(test_rows) if test_rows is not None else list(scored or [])
    at = {row: k for k, row in enumerate(index)}
    by_class = [[i for i in np.flatnonzero(y == c).tolist() if scored is None or i in at]
                for c in range(len(labels))]  # fmt: skip
    picked: list[int] = []
    while len(picked) < size and any(by_class):
        for rows in by_class:
            if rows and len(picked) < size:
                picked.append(rows.pop(0))
    per_variant = {name: v["predictions"] for name, v in (variants or {}).items()
                   if "predictions" in v}  # fmt: skip
    rows = []
    for i in sorted(picked):
        row = {"text": texts[i], "label": labels[int(probs[i].argmax())],
               "score": round(float(probs[i].max()), 4)}  # fmt: skip
        if per_variant:
            row["variants"] = {name: labels[int(pred[at[i]])]
                               for name, pred in per_variant.items()}  # fmt: skip
        rows.append(row)
    return rows


def run_evaluation(cfg: EvalConfig, settings: Settings | None = None) -> dict:
    """Evaluate, decide and (on a pass) register; writes evaluation.json and the PNG."""
    settings = settings or Settings.from_env()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    train_df, test_df, stats = _load_data(Path(cfg.data))
    label_map = LabelMap.from_dict(stats["label_map"])
    labels = [label_map.id2label[i] for i in range(label_map.num_labels)]
    texts, y = test_df["review_body"].tolist(), test_df["label"].to_numpy()
    slices = test_df["product_category"].to_numpy()

    t = time.perf_counter()
    model = Classifier(cfg.model_dir)
    probs = predict_probs(model, texts, cfg.batch_size)
    ours = score(y, probs, labels, slices)
    predictions = {"model": probs.argmax(axis=1)}
    timings["model"] = time.perf_counter() - t

    t = time.perf_counter()
    base_model = baseline.train_baseline(
        train_df["review_body"].tolist(), train_df["label"].to_numpy()
    )
    base_probs = baseline.baseline_probs(base_model, texts, len(labels))
    base = score(y, base_probs, labels, slices)
    predictions["baseline"] = base_probs.argmax(axis=1)
    timings["baseline"] = time.perf_counter() - t

    name = cfg.registered_model_name or settings.registered_model_name
    champion = _score_champion(name, texts, y, labels, slices, cfg, settings, timings)
    if champion:
        predictions["champion"] = np.asarray(champion.pop("predictions"))
    bias = post_training_bias(y, predictions["model"], slices, texts, labels,
                              cfg.gate.min_category_rows)  # fmt: skip
    decision = decide(
        y, predictions, len(labels), cfg.gate,
        champion_version=champion["version"] if champion else "",
        report=cfg.report or str(out / "evaluation.json"),
        worst_category=bias["worst_category"],
    )  # fmt: skip
    if not decision.passed:
        advice = advise(stats, read_train_results(cfg.model_dir))
        decision = replace(decision, advice=tuple(advice))
    logger.info(decision.message())
    explanation = None
    if cfg.explain_rows > 0 and len(texts):
        t = time.perf_counter()
        explanation = global_explanation(cfg.model_dir, texts, probs, labels, cfg.explain_rows,
                                         cfg.explain_steps)  # fmt: skip
        plot_top_words(explanation["top_words"], out / "global_explanation.png")
        timings["global_explanation"] = time.perf_counter() - t

    variants = None
    if cfg.variants is not None and len(texts) and decision.passed:  # what may be served
        t = time.perf_counter()
        variants = _build_variants(cfg, texts, y, probs, len(labels))
        timings["variants"] = time.perf_counter() - t

    sample = texts[: cfg.behaviour_rows]
    predict = lambda batch: predict_probs(model, batch, cfg.batch_size)  # noqa: E731
    checks = [behaviour.invariance(predict, sample), behaviour.directional(predict, sample, labels)]

    result = {
        # the book's evaluation.json shape first, then everything else
        "metrics": {
            key: {"value": ours[key]}
            for key in ("accuracy", "macro_f1", "within_one_star_accuracy")
            if key in ours
        },
        "model": ours,
        "baseline": {"name": baseline.NAME, **base},
        "champion": champion,
        "gate": {**decision.to_dict(), "config": asdict(cfg.gate), "message": decision.message()},
        "comparisons": {k: v.to_dict() for k, v in decision.comparisons.items()},
        "behaviour": checks,
        "bias": bias,
        "global_explanation": explanation,
        "data_version": stats.get("data_version"),
        # what a deployment must answer the same way: held-out reviews and this model's labels
        "smoke_set": smoke_set(texts, y, probs, labels,
                               variants=variants["record"]["variants"] if variants else None,
                               test_rows=variants["record"]["test_rows"] if variants else None),
        "variants": public(variants["record"]) if variants else None,
        "serving": variants["serving"] if variants else None,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "registered_version": None,
        "model_storage_uri": None,
    }  # fmt: skip
    plot_confusion(
        ours["confusion_matrix"], labels, "BERT on the test split", out / "confusion_matrix.png"
    )
    if decision.passed and cfg.register and cfg.model_uri:
        tags = {
            "kfp_run_id": cfg.kfp_run_id, "data_version": stats.get("data_version", ""),
            "code_version": os.environ.get("CODE_VERSION", settings.image_tag),
            "training_run_id": cfg.mlflow_run_id, "test_accuracy": f"{ours['accuracy']:.4f}",
            "baseline_accuracy": f"{base['accuracy']:.4f}", "label_mode": label_map.mode.value,
            "test_macro_f1": f"{ours['macro_f1']:.4f}", "gate_metric": cfg.gate.metric,
            # the ingest output (splits + stats.json) the monitor compares served traffic with
            "data_uri": stats.get("config", {}).get("output", ""),
        }  # fmt: skip
        result["model_storage_uri"] = registry.model_dir_uri(cfg.model_uri, settings)
        if variants:
            tags.update(variant_tags(variants))
            # the variants go with the model's files, before the version exists: a version is
            # never registered (nor made challenger) without the files its tags name
            _store_variants(variants["dir"], result["model_storage_uri"], settings)
        result["registered_version"] = registry.register(cfg.model_uri, name, tags)
    (out / "evaluation.json").write_text(json.dumps(result, indent=2, default=str))
    if variants:
        (out / VARIANTS_FILE).write_text(json.dumps(variants["record"]))
        shutil.rmtree(variants["dir"].parent, ignore_errors=True)  # a model copy and its variants
    (out / "report.html").write_text(report_html(result, out))
    _log_to_mlflow(cfg, result, out)
    return result


def _build_variants(cfg: EvalConfig, texts: list[str], y: np.ndarray, probs: np.ndarray,
                    num_labels: int) -> dict:  # fmt: skip
    """Variants of a copy of the model directory (the step's input stays as it was).

    Returns the record, the serving choice per target, and the directory holding the files.
    """
    work = Path(tempfile.mkdtemp(prefix="variants-"))  # removed once stored (run_evaluation)
    model_dir = work / "model"
    shutil.copytree(cfg.model_dir, model_dir)
    vcfg = replace(cfg.variants, metric=cfg.gate.metric, confidence=cfg.gate.confidence)
    rows = np.arange(len(y))
    if len(rows) > vcfg.max_rows:  # a fixed random sample of the test rows
        rows = np.sort(np.random.default_rng(0).choice(len(rows), vcfg.max_rows, replace=False))
    record = record_variants(model_dir, [texts[i] for i in rows], y[rows], probs[rows],
                             num_labels, vcfg)  # fmt: skip
    record["test_rows"] = rows.tolist()  # which test rows the per-variant predictions are for
    (model_dir / VARIANTS_FILE).write_text(json.dumps(record))
    serving = {target: choose_variant(record, target).to_dict() for target in TARGETS}
    logger.info("serving variant: %s", serving)
    return {"record": record, "serving": serving, "dir": model_dir}


def variant_tags(variants: dict) -> dict[str, str]:
    """Registry tags: each variant's eligibility and the serving choice per target."""
    tags = {
        f"variant.{name}": f"{'eligible' if v.get('eligible') else 'refused'}; "
        f"{v.get('verdict', '')}"[:500]
        for name, v in variants["record"]["variants"].items()
    }
    for target, choice in variants["serving"].items():
        tags[f"serving_variant.{target}"] = choice["variant"]
    return tags


def _store_variants(model_dir: Path, storage_uri: str, settings: Settings) -> None:
    from components.common.storage import S3Storage

    storage = S3Storage(settings)
    base = storage_uri.rstrip("/")
    storage.upload_dir(model_dir / VARIANTS_DIR, f"{base}/{VARIANTS_DIR}/")
    storage.upload_file(model_dir / VARIANTS_FILE, f"{base}/{VARIANTS_FILE}")


def _score_champion(name, texts, y, labels, slices, cfg, settings, timings) -> dict | None:
    version = registry.version_by_alias(name, registry.CHAMPION)
    if version is None:
        logger.info("no champion for %s yet: first model", name)
        return None
    t = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="champion-") as tmp:
        try:
            model_dir = registry.download_model_dir(version.source, Path(tmp), settings)
            champ = Classifier(model_dir)
        except (PlatformError, OSError) as e:
            # A registry that outlived its artifacts (a restarted local S3, a deleted bucket)
            # must not block every later model: compare with what can be loaded.
            logger.warning("champion %s v%s cannot be loaded (%s): no usable champion, the gate "
                           "compares with the baseline only", name, version.version, e)  # fmt: skip
            return None
        probs = predict_probs(champ, texts, cfg.batch_size)
        metrics = score(y, probs, labels, slices)
    timings["champion"] = time.perf_counter() - t
    return {"version": str(version.version), "metrics": metrics,
            "predictions": probs.argmax(axis=1).tolist()}  # fmt: skip


def _log_to_mlflow(cfg: EvalConfig, result: dict, out: Path) -> None:
    """Test figures and files into the training run, by id.

    The client API, not ``start_run``: that would also have to match whatever experiment the
    process has active (a caller that ran validation first has set another one).
    """
    if not cfg.mlflow_run_id:
        return
    from mlflow import MlflowClient

    figures = {"test_accuracy": result["model"]["accuracy"],
               "test_macro_f1": result["model"]["macro_f1"],
               "test_ece": result["model"]["ece"],
               "baseline_accuracy": result["baseline"]["accuracy"],
               "baseline_macro_f1": result["baseline"]["macro_f1"],
               "gate_passed": float(result["gate"]["passed"])}  # fmt: skip
    figures.update(bias_figures(result["bias"]))
    if result["champion"]:
        figures["champion_accuracy"] = result["champion"]["metrics"]["accuracy"]
        figures["champion_macro_f1"] = result["champion"]["metrics"]["macro_f1"]
    figures.update(variant_figures(result.get("variants")))
    for other, diff in result["comparisons"].items():
        figures[f"diff_vs_{other}"] = diff["difference"]
        figures[f"diff_vs_{other}_ci_low"] = diff["low"]
        figures[f"diff_vs_{other}_ci_high"] = diff["high"]
    client = MlflowClient()
    for key, value in figures.items():
        client.log_metric(cfg.mlflow_run_id, key, value)
    client.log_artifact(cfg.mlflow_run_id, str(out / "evaluation.json"), "evaluation")
    for name in ("confusion_matrix.png", "report.html", "global_explanation.png", VARIANTS_FILE):
        if (out / name).exists():
            client.log_artifact(cfg.mlflow_run_id, str(out / name), "evaluation")


def variant_figures(variants: dict | None) -> dict[str, float]:
    """Per variant: accuracy, macro-F1, agreement with fp32, the interval's low end, eligible."""
    figures: dict[str, float] = {}
    for name, v in ((variants or {}).get("variants") or {}).items():
        if "accuracy" not in v:
            continue
        for key in ("accuracy", "macro_f1", "agreement_with_fp32"):
            figures[f"variant_{key}.{name}"] = float(v[key])
        figures[f"variant_diff_ci_low.{name}"] = float(v[f"{variants['metric']}_vs_fp32"]["low"])
        figures[f"variant_eligible.{name}"] = float(v["eligible"])
    return figures


def bias_figures(bias: dict) -> dict[str, float]:
    """The bias figures as flat metrics (MLflow, KFP): worst gaps and per-category accuracy."""
    figures = {}
    for key, worst in (("category", bias["worst_category"]),
                       ("length", bias["worst_length_bucket"])):  # fmt: skip
        if worst:
            figures[f"worst_{key}_accuracy_gap"] = worst["accuracy_gap"]
    for facet, prefix in (("product_category", "category"), ("review_length", "length")):
        for value, m in bias[facet].items():
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in value)
            figures[f"{prefix}_accuracy.{safe}"] = m["accuracy"]
            figures[f"{prefix}_AD.{safe}"] = m["AD"]
    return figures


def parse_args(argv: list[str] | None) -> EvalConfig:
    p = argparse.ArgumentParser(prog="python -m components.evaluate", description=__doc__)
    p.add_argument("--model-dir", required=True, help="save_pretrained directory to evaluate")
    p.add_argument("--data", required=True, help="ingest output with train/, test/, stats.json")
    p.add_argument("--output-dir", required=True, help="where evaluation.json and PNGs go")
    p.add_argument(
        "--model-uri", default="", help="logged MLflow model (models:/m-...) to register"
    )
    p.add_argument("--mlflow-run-id", default="", help="training run to log evaluation into")
    p.add_argument("--registered-model-name", default="", help="registry name (default setting)")
    p.add_argument("--register", action=argparse.BooleanOptionalAction, default=True,
                   help="register the model version when the gate passes")  # fmt: skip
    d = GateConfig()
    p.add_argument("--min-accuracy", type=float, default=d.min_accuracy,
                   help="absolute accuracy floor")  # fmt: skip
    p.add_argument("--gate-metric", choices=METRICS, default=d.metric,
                   help="metric compared with the baseline and the champion")  # fmt: skip
    p.add_argument("--min-gain-over-baseline", type=float, default=d.min_gain_over_baseline,
                   help="margin the baseline interval is compared with")  # fmt: skip
    p.add_argument("--baseline-test", choices=BASELINE_TESTS, default=d.baseline_test,
                   help="superiority: the interval must lie above the margin; non_inferiority: "
                   "fail only when it lies below")  # fmt: skip
    p.add_argument("--max-regression", type=float, default=d.max_regression,
                   help="allowed drop versus the champion")  # fmt: skip
    p.add_argument("--confidence", type=float, default=d.confidence,
                   help="confidence level of the paired bootstrap intervals")  # fmt: skip
    p.add_argument("--max-category-accuracy-gap", type=float, default=d.max_category_accuracy_gap,
                   help="fail when the worst product category's accuracy is more than this "
                   "below the other rows (below 0, the default: not checked)")  # fmt: skip
    p.add_argument("--min-category-rows", type=int, default=d.min_category_rows,
                   help="test rows a category needs to count as the worst one")  # fmt: skip
    e = EvalConfig("", "", "")
    p.add_argument("--explain-rows", type=int, default=e.explain_rows,
                   help="test reviews explained for the global explanation (0: none)")  # fmt: skip
    p.add_argument("--explain-steps", type=int, default=e.explain_steps,
                   help="integrated-gradients steps per explained review")  # fmt: skip
    v = VariantConfig()
    p.add_argument("--variants", action=argparse.BooleanOptionalAction, default=True,
                   help="build and score the serving variants (ONNX fp32, int8, bf16)")  # fmt: skip
    p.add_argument("--variant-tolerance", type=float, default=v.tolerance,
                   help="a variant is eligible when the lower end of the paired interval of "
                   "(variant - fp32) on the gate metric lies above -tolerance")  # fmt: skip
    p.add_argument("--kfp-run-id", default="local", help="pipeline run id for lineage tags")
    a = p.parse_args(argv)
    gate = GateConfig(min_accuracy=a.min_accuracy, metric=a.gate_metric,
                      min_gain_over_baseline=a.min_gain_over_baseline,
                      baseline_test=a.baseline_test, max_regression=a.max_regression,
                      confidence=a.confidence,
                      max_category_accuracy_gap=a.max_category_accuracy_gap,
                      min_category_rows=a.min_category_rows)  # fmt: skip
    return EvalConfig(a.model_dir, a.data, a.output_dir, a.model_uri, a.mlflow_run_id,
                      a.registered_model_name, a.register, gate, a.kfp_run_id,
                      explain_rows=a.explain_rows, explain_steps=a.explain_steps,
                      variants=VariantConfig(tolerance=a.variant_tolerance)
                      if a.variants else None)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    result = run_stage("evaluate", lambda: run_evaluation(parse_args(argv)))
    if result is None:
        return 1
    print(result["gate"]["message"])
    return 0 if result["gate"]["passed"] else 3
