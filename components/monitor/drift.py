"""Served traffic against the training data: property drift, predicted labels, confidence.

The reference is the serving model's training split, re-weighted to the class mix ingest saw
before balancing (``stats.json``'s ``classes_before``): traffic is not balanced, so comparing
it with the balanced split would flag every deployment. Drift scores are deepchecks'
``FeatureDrift`` (Kolmogorov-Smirnov for numeric properties, Cramer's V for the predicted
label), so the figures and the HTML report come from the same run.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from components.validate.suites import TEXT_ONLY_PROPERTIES, text_only_properties

logger = logging.getLogger(__name__)

LABEL_COLUMN = "predicted_label"


@dataclass(frozen=True)
class Thresholds:
    """When the monitor asks for a retrain; defaults follow the book (0.70 for human review)."""

    max_property_drift: float = 0.2  # Kolmogorov-Smirnov statistic per text property
    max_label_drift: float = 0.2  # Cramer's V of the predicted-label distribution
    confidence: float = 0.70  # below it a prediction goes to the review queue
    max_low_confidence_share: float = 0.3
    min_records: int = 200  # fewer captured predictions: no verdict either way
    min_labelled: int = 200  # labelled feedback rows that start a retrain on their own


@dataclass
class Verdict:
    """The decision and every reason behind it."""

    retrain: bool
    status: str  # "ok", "retrain" or "insufficient_traffic"
    reasons: list[str] = field(default_factory=list)
    drifted_properties: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def reference_sample(train: pd.DataFrame, id2label: dict[int, str], classes_before: dict[str, int],
                     max_rows: int, seed: int = 0) -> pd.DataFrame:  # fmt: skip
    """Properties and label names of a sample of ``train`` with the pre-balancing class mix."""
    names = train["label"].map(lambda i: id2label[int(i)])
    frame = text_only_properties(train["review_body"]).assign(**{LABEL_COLUMN: names.values})
    share_now = names.value_counts(normalize=True)
    total_before = sum(classes_before.values()) or 1
    weights = names.map(lambda n: classes_before.get(n, 0) / total_before / share_now[n])
    if weights.sum() <= 0:  # no pre-balancing counts: the split as it is
        weights = None
    n = min(max_rows, len(frame))
    return frame.sample(n=n, weights=weights, replace=weights is not None, random_state=seed)


def traffic_frame(records: pd.DataFrame) -> pd.DataFrame:
    """The captured records' properties and predicted labels, in the reference's columns."""
    return records[[*TEXT_ONLY_PROPERTIES, LABEL_COLUMN]].reset_index(drop=True)


def run_drift(
    reference: pd.DataFrame, traffic: pd.DataFrame, th: Thresholds
) -> tuple[dict, object]:
    """Deepchecks' FeatureDrift on the properties and on the predicted label; scores + result."""
    from deepchecks.tabular import Dataset, Suite

    columns = [*TEXT_ONLY_PROPERTIES, LABEL_COLUMN]
    ref = Dataset(reference.reset_index(drop=True), features=columns, cat_features=[LABEL_COLUMN])
    cur = Dataset(traffic, features=columns, cat_features=[LABEL_COLUMN])
    suite = Suite(
        "Served traffic vs training data",
        _drift_check(list(TEXT_ONLY_PROPERTIES), th.max_property_drift),
        _drift_check([LABEL_COLUMN], th.max_label_drift),
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = suite.run(train_dataset=ref, test_dataset=cur)
    scores: dict[str, dict] = {}
    for check in result.results:
        for column, value in (check.value or {}).items():
            limit = th.max_label_drift if column == LABEL_COLUMN else th.max_property_drift
            score = float(value["Drift score"])
            scores[column] = {"score": round(score, 4), "method": value["Method"],
                              "threshold": limit, "drifted": score >= limit,
                              "reference_mean": _mean(reference, column),
                              "traffic_mean": _mean(traffic, column)}  # fmt: skip
    return scores, result


def _drift_check(columns: list[str], limit: float) -> object:
    from deepchecks.tabular.checks import FeatureDrift

    check = FeatureDrift(columns=columns, n_samples=100_000)  # every row, no subsampling
    return check.add_condition_drift_score_less_than(limit, limit)


def _mean(df: pd.DataFrame, column: str) -> float | None:
    return round(float(df[column].mean()), 4) if column != LABEL_COLUMN else None


def label_shares(df: pd.DataFrame) -> dict[str, float]:
    shares = df[LABEL_COLUMN].value_counts(normalize=True).sort_index()
    return {str(k): round(float(v), 4) for k, v in shares.items()}


def confidence_figures(records: pd.DataFrame, th: Thresholds) -> dict:
    conf = records["confidence"].astype(float)
    return {"mean_confidence": round(float(conf.mean()), 4),
            "low_confidence_share": round(float((conf < th.confidence).mean()), 4),
            "low_confidence_rows": int((conf < th.confidence).sum())}  # fmt: skip


def decide(records: int, scores: dict, confidence: dict, labelled: int, th: Thresholds) -> Verdict:
    """Retrain on drifted properties or labels, too many unsure answers, or enough new labels."""
    reasons: list[str] = []
    if labelled >= th.min_labelled:
        reasons.append(f"{labelled} labelled feedback rows (>= {th.min_labelled})")
    if records < th.min_records:
        status = "retrain" if reasons else "insufficient_traffic"
        reasons.append(
            f"only {records} captured predictions (< {th.min_records}): no drift verdict"
        )
        return Verdict(bool(status == "retrain"), status, reasons)
    drifted = [c for c, s in scores.items() if s["drifted"] and c != LABEL_COLUMN]
    for column in drifted:
        s = scores[column]
        means = f"mean {s['reference_mean']} -> {s['traffic_mean']}"
        reasons.append(f"property {column} drifted: {s['method']} {s['score']:.3f} >= "
                       f"{s['threshold']} ({means})")  # fmt: skip
    label = scores.get(LABEL_COLUMN)
    if label and label["drifted"]:
        reasons.append(f"predicted-label distribution drifted: {label['method']} "
                       f"{label['score']:.3f} >= {label['threshold']}")  # fmt: skip
    if confidence["low_confidence_share"] > th.max_low_confidence_share:
        share = confidence["low_confidence_share"]
        reasons.append(f"{share:.1%} of predictions below {th.confidence} confidence "
                       f"(> {th.max_low_confidence_share:.0%})")  # fmt: skip
    if not reasons:
        return Verdict(False, "ok", ["no drift over threshold, confidence as expected"])
    return Verdict(True, "retrain", reasons, drifted)


def plot_drift(scores: dict, path: Path) -> Path:
    """Bar chart of each drift score against its threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(scores)
    values = [scores[n]["score"] for n in names]
    colours = ["#c0392b" if scores[n]["drifted"] else "#2e86c1" for n in names]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.barh(names, values, color=colours)
    for i, n in enumerate(names):
        ax.plot([scores[n]["threshold"]] * 2, [i - 0.4, i + 0.4], color="black", lw=1)
    ax.set_xlim(0, 1)
    ax.set_xlabel("drift score (KS for properties, Cramer's V for labels); line = threshold")
    ax.set_title("Served traffic vs training data")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
