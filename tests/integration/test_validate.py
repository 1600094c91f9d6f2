"""Validation on real ingest output: a clean set passes; each planted problem fails by name."""

import shutil
from pathlib import Path

import pandas as pd
import pytest

from components.common.errors import DataValidationFailed
from components.ingest.config import IngestConfig
from components.ingest.job import run_ingest
from components.validate.job import ValidateConfig, run_validation

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _copy(splits: Path, tmp: Path) -> Path:
    out = tmp / "data"
    shutil.copytree(splits, out)
    return out


def _rewrite(data: Path, split: str, change) -> None:
    df = change(pd.read_parquet(data / split))
    shutil.rmtree(data / split)
    (data / split).mkdir()
    df.to_parquet(data / split / "part-0.parquet", index=False)


def _validate(data: Path, tmp: Path, mode: str = "fail") -> dict:
    return run_validation(ValidateConfig(str(data), str(tmp / "out"), mode, min_rows=500))


def test_clean_splits_pass_and_write_the_report(splits, tmp_path):
    summary = _validate(splits[0], tmp_path)
    assert summary["passed"], summary["failed"]
    report = Path(summary["report"])
    assert report.stat().st_size > 10_000 and report.read_text().count("plotly.js v") <= 1
    assert {"review_id_unique", "label_drift", "property_drift", "train_test_text_overlap"} <= {
        c["name"] for c in summary["checks"]
    }
    assert all(c["seconds"] >= 0 for c in summary["checks"])
    assert set(summary["bias"]) == {"Books", "Digital_Software", "Gift_Card", "Kitchen",
                                    "Mobile_Electronics", "Toys"}  # fmt: skip


def _dup_rows(df):
    extra = df.sample(frac=0.2, random_state=1).assign(review_id=lambda d: d["review_id"] + "-copy")
    return pd.concat([df, extra])


def _conflicts(df):
    extra = df.sample(frac=0.1, random_state=2).assign(
        review_id=lambda d: d["review_id"] + "-x", label=lambda d: (d["label"] + 2) % 5
    )
    return pd.concat([df, extra])


PLANTED = [
    ("duplicated reviews", "train", _dup_rows, "duplicates_train"),
    ("conflicting labels", "train", _conflicts, "conflicting_labels_train"),
    ("leakage across splits", "test",
     lambda df: df.assign(review_id=pd.read_parquet(LEAK_SOURCE[0])["review_id"].iloc[: len(df)].values),
     "train_test_leakage_review_id"),
    ("label drift", "test", lambda df: df.assign(label=df["label"].clip(upper=1)), "label_drift"),
    ("unseen category", "test", lambda df: df.assign(product_category="Automotive"), "new_category_in_test"),
    ("empty texts", "train", lambda df: df.assign(review_body=df["review_body"].where(df.index % 10 != 0, "")),
     "empty_or_short_texts"),
    ("out-of-range star_rating", "train", lambda df: df.assign(star_rating=df["star_rating"].where(df.index != 0, 7)),
     "star_rating_in_range"),
    ("duplicate review_id", "train", lambda df: df.assign(review_id=df["review_id"].where(df.index != 1, df["review_id"].iloc[0])),
     "review_id_unique"),
]  # fmt: skip
LEAK_SOURCE: list = []


@pytest.mark.parametrize(("case", "split", "change", "check"), PLANTED, ids=[p[0] for p in PLANTED])
def test_each_planted_problem_fails_the_gate_naming_the_check(
    splits, tmp_path, case, split, change, check
):
    data = _copy(splits[0], tmp_path)
    LEAK_SOURCE[:] = [data / "train"]
    _rewrite(data, split, change)
    with pytest.raises(DataValidationFailed) as info:
        _validate(data, tmp_path)
    message = str(info.value)
    assert check in message, message
    assert f"Report: {tmp_path / 'out' / 'report.html'}" in message
    assert (tmp_path / "out" / "report.html").stat().st_size > 10_000
    # warn mode records the same failure and lets the run go on
    summary = _validate(data, tmp_path / "warn", mode="warn")
    assert check in summary["failed"] and summary["passed"] is False


def test_real_samples_through_ingest_and_validation_in_warn_mode(reviews_dir, tmp_path):
    out = tmp_path / "ingested"
    run_ingest(IngestConfig(input=str(reviews_dir / "amazon_reviews_us_Gift_Card_v1_00.sample.tsv"),
                            output=str(out), balance=False))  # fmt: skip
    summary = run_validation(ValidateConfig(str(out), str(tmp_path / "val"), "warn", min_rows=100))
    assert {c["name"] for c in summary["checks"]} >= {"review_id_unique", "label_drift"}
    assert Path(summary["report"]).exists()


def test_checks_and_bias_are_logged_to_mlflow(splits, stack, tmp_path):
    import mlflow

    summary = run_validation(ValidateConfig(str(splits[0]), str(tmp_path), "warn", min_rows=500,
                                            mlflow=True))  # fmt: skip
    client = mlflow.MlflowClient(stack.mlflow_uri)
    run = client.get_run(summary["mlflow_run_id"])
    assert run.data.tags["stage"] == "validate" and len(run.data.tags["data_version"]) == 16
    assert run.data.metrics["bias_CI_Books"] == pytest.approx(summary["bias"]["Books"]["CI"])
    assert "bias_DPL_Gift_Card" in run.data.metrics and run.data.metrics["checks_failed"] == 0
    names = [a.path for a in client.list_artifacts(run.info.run_id, "validation")]
    assert names == ["validation/report.html", "validation/summary.json"]
