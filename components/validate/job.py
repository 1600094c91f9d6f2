"""The validate step: constraints, deepchecks suites and bias figures on the ingest splits.

Usage: ``python -m components.validate --data DIR --output-dir DIR [--mode fail|warn]``.
A failed check fails the step (mode ``fail``) with a message naming every failed check and
the report's location; ``warn`` records the failures and lets the pipeline go on.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from components.common.cli import run_stage
from components.common.errors import ConfigurationError, DataValidationFailed
from components.common.schema import LabelMap
from components.validate import bias, constraints, suites
from components.validate.advice import with_advice
from components.validate.report import write_report

logger = logging.getLogger(__name__)

MODES = ("fail", "warn")
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class ValidateConfig:
    """Inputs, thresholds and the gate mode of one validation."""

    data: str
    output_dir: str
    mode: str = "fail"
    max_rows: int = 20_000
    marketplaces: tuple[str, ...] = ("US",)
    # Training rows below which a run is refused: the examples budget trains 500 rows for
    # ~19 passes, and the 3-class Digital Software set (1,121 rows) already trains; the
    # 85-row Mobile Electronics sample does not (its test split would hold 8 rows).
    min_rows: int = 500
    min_text_chars: int = 3
    max_short_text_share: float = 0.01
    thresholds: suites.Thresholds = field(default_factory=suites.Thresholds)
    mlflow: bool = False
    data_version: str = ""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigurationError(f"validation_mode {self.mode!r} is not one of: fail, warn")


def load_splits(data: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(data / name) for name in SPLITS if (data / name).exists()}


def run_validation(cfg: ValidateConfig) -> dict:
    """Run every check, write report.html and summary.json; raise if the gate fails."""
    start = time.perf_counter()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(cfg.data)
    splits = load_splits(data)
    if "train" not in splits or "test" not in splits:
        raise DataValidationFailed(f"{data} lacks train/ or test/ splits")
    stats_path = data / "stats.json"
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    label_map = LabelMap.from_dict(stats["label_map"]) if "label_map" in stats else None
    if not cfg.data_version and stats.get("data_version"):
        cfg = replace(cfg, data_version=stats["data_version"])

    t = time.perf_counter()
    outcomes = constraints.deequ_constraints(splits, cfg.marketplaces, cfg.min_rows)
    outcomes.append(constraints.leakage_by_id(splits))
    outcomes.append(constraints.short_texts(splits, cfg.min_text_chars, cfg.max_short_text_share))
    logger.info("constraints: %.1fs", time.perf_counter() - t)

    train = suites.sample(suites.text_properties(splits["train"]), cfg.max_rows)
    test = suites.sample(suites.text_properties(splits["test"]), cfg.max_rows)
    checks, results = suites.run_checks(train, test, cfg.thresholds)
    outcomes.extend(checks)

    positive = _positive_labels(label_map)
    labels = sorted(splits["train"]["label"].unique().tolist())
    facets = bias.facet_bias(splits["train"], "product_category", "label", positive, labels)

    outcomes = [with_advice(o) for o in outcomes]
    failed = [o for o in outcomes if not o.passed]
    verdict = "passed" if not failed else f"{len(failed)} check(s) failed"
    report = _write_report(out, results, outcomes, facets, verdict)
    summary = {
        "passed": not failed,
        "mode": cfg.mode,
        "checks": [o.to_dict() for o in outcomes],
        "failed": [o.name for o in failed],
        "bias": facets,
        "rows": {name: len(df) for name, df in splits.items()},
        "report": str(report),
        "seconds": round(time.perf_counter() - start, 2),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    if cfg.mlflow:
        summary["mlflow_run_id"] = _log_to_mlflow(summary, out, cfg.data_version)
    if failed:
        message = (
            "data validation failed: "
            + "; ".join(f"{o.name} ({o.detail}; what to change: {o.advice})" for o in failed)
            + f". Report: {report}"
        )
        if cfg.mode == "fail":
            raise DataValidationFailed(message)
        logger.warning("%s (mode warn: continuing)", message)
    return summary


def _log_to_mlflow(summary: dict, out: Path, data_version: str) -> str:
    """Checks and bias figures as metrics of a ``validate`` run, the report as an artifact."""
    import mlflow

    from components.common.tracking import start_stage_run

    with start_stage_run("validate") as run:
        mlflow.set_tags({"stage": "validate", "data_version": data_version,
                         "passed": str(summary["passed"])})  # fmt: skip
        metrics = {"checks_failed": len(summary["failed"]), "checks_total": len(summary["checks"])}
        for facet, figures in summary["bias"].items():
            key = "".join(c if c.isalnum() or c in "_-." else "_" for c in facet)
            for name in ("CI", "DPL", "KL", "JS"):
                metrics[f"bias_{name}_{key}"] = figures[name]
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(out / "summary.json"), "validation")
        mlflow.log_artifact(str(out / "report.html"), "validation")
    return run.info.run_id


def _positive_labels(label_map: LabelMap | None) -> set[int]:
    """Labels counted as positive for DPL: 4-5 stars, or the 'positive' sentiment class."""
    if label_map is None:
        return {3, 4}
    return {i for i, name in label_map.id2label.items() if name in ("4", "5", "positive")}


def _write_report(out: Path, results: list, outcomes: list, facets: dict, verdict: str) -> Path:
    from deepchecks.core.suite import SuiteResult

    suite_path = out / "deepchecks.html"
    SuiteResult("Review data validation", results).save_as_html(str(suite_path), as_widget=False)
    page = suite_path.read_text()
    suite_path.unlink()
    return write_report(out / "report.html", page, outcomes, facets, verdict)


def parse_args(argv: list[str] | None) -> ValidateConfig:
    p = argparse.ArgumentParser(
        prog="python -m components.validate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, help="ingest output with train/ validation/ test/")
    p.add_argument("--output-dir", required=True, help="where report.html and summary.json go")
    p.add_argument("--mode", choices=MODES, default="fail", help="fail the step, or only warn")
    p.add_argument("--max-rows", type=int, default=20_000, help="rows per split for deepchecks")
    p.add_argument("--marketplaces", nargs="+", default=["US"], help="allowed marketplace codes")
    p.add_argument("--min-rows", type=int, default=ValidateConfig.min_rows,
                   help="minimum rows in the train split")  # fmt: skip
    a = p.parse_args(argv)
    return ValidateConfig(
        a.data, a.output_dir, a.mode, a.max_rows, tuple(a.marketplaces), a.min_rows
    )


def main(argv: list[str] | None = None) -> int:
    summary = run_stage("validate", lambda: run_validation(parse_args(argv)))
    if summary is None:
        return 1
    print(
        json.dumps(
            {"passed": summary["passed"], "failed": summary["failed"], "report": summary["report"]}
        )
    )
    return 0
