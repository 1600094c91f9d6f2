"""deepchecks checks on the splits: integrity per split and train/test validation.

Only checks that run offline are used (see NOTES: the NLP suites download models and NLTK
data); text properties are computed here and checked as tabular features.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass

import pandas as pd

from components.validate.constraints import CheckOutcome

logger = logging.getLogger(__name__)

PROPERTIES = (
    "text_length",
    "word_count",
    "uppercase_share",
    "punctuation_share",
    "helpful_votes",
    "total_votes",
    "review_year",
)


@dataclass(frozen=True)
class Thresholds:
    """Conditions of the deepchecks checks; defaults suit Amazon reviews."""

    max_duplicate_ratio: float = 0.1  # short reviews repeat ("Great card!")
    max_conflicting_ratio: float = 0.05
    max_label_drift: float = 0.1
    max_property_drift: float = 0.2
    max_text_overlap: float = 0.1
    max_outlier_ratio: float = 0.05
    # Least/most frequent class. Reported, not fatal, down to 1:100: the train step keeps
    # every row and weights the loss by class (real Electronics reviews: 1:11). Below that a
    # class has too few rows to learn even weighted.
    min_class_ratio: float = 0.01


TOO_FEW_ROWS = "add reviews: the split is too small for this check (and for training)"

# The properties of a text alone: what validation checks and what the monitor compares between
# the training split and served traffic (which has no votes or dates).
TEXT_ONLY_PROPERTIES = (
    "text_length",
    "word_count",
    "uppercase_share",
    "punctuation_share",
    "non_ascii_share",
)


def text_only_properties(text: pd.Series) -> pd.DataFrame:
    """``TEXT_ONLY_PROPERTIES`` of each text (a missing text counts as empty)."""
    text = text.fillna("").astype(str)
    length = text.str.len().clip(lower=1)
    return pd.DataFrame(
        {
            "text_length": text.str.len(),
            "word_count": text.str.split().str.len().fillna(0),
            "uppercase_share": text.str.count(r"[A-Z]") / length,
            "punctuation_share": text.str.count(r"[^\w\s]") / length,
            "non_ascii_share": text.str.count(r"[^\x00-\x7f]") / length,
        }
    )


def text_properties(df: pd.DataFrame) -> pd.DataFrame:
    """Derived columns the checks read (deepchecks' own NLP properties need downloads)."""
    text = df["review_body"].fillna("")
    own = text_only_properties(text)
    out = pd.DataFrame(
        {
            "review_body": text,
            "product_category": df["product_category"],
            "label": df["label"],
            **{name: own[name] for name in PROPERTIES if name in own},
            "helpful_votes": df["helpful_votes"],
            "total_votes": df["total_votes"],
            "review_year": pd.to_datetime(df["review_date"], errors="coerce").dt.year.fillna(0),
        }
    )
    return out.reset_index(drop=True)


def sample(df: pd.DataFrame, max_rows: int, seed: int = 0) -> pd.DataFrame:
    """At most ``max_rows`` rows, stratified by label."""
    if len(df) <= max_rows:
        return df
    share = max_rows / len(df)
    return df.groupby("label", group_keys=False).sample(frac=share, random_state=seed)


def _datasets(train: pd.DataFrame, test: pd.DataFrame) -> tuple:
    from deepchecks.tabular import Dataset

    def make(df: pd.DataFrame, features: list[str], cat: list[str]) -> Dataset:
        return Dataset(df, label="label", features=features, cat_features=cat)

    props = list(PROPERTIES)
    feats = ["product_category", *props]
    return (
        make(train, feats, ["product_category"]),
        make(test, feats, ["product_category"]),
        make(train, ["review_body"], ["review_body"]),
        make(test, ["review_body"], ["review_body"]),
        make(train[[*props, "label"]], props, []),
    )


def run_checks(
    train: pd.DataFrame, test: pd.DataFrame, th: Thresholds
) -> tuple[list[CheckOutcome], list]:
    """Every deepchecks check with its condition; returns outcomes and the raw results."""
    from deepchecks.tabular.checks import (
        ClassImbalance,
        ConflictingLabels,
        DataDuplicates,
        FeatureDrift,
        LabelDrift,
        NewCategoryTrainTest,
        OutlierSampleDetection,
        TrainTestSamplesMix,
    )

    props_train, props_test, text_train, text_test, numeric_train = _datasets(train, test)
    plan = [
        (
            "duplicates_train",
            DataDuplicates(columns=["review_body"]).add_condition_ratio_less_or_equal(
                th.max_duplicate_ratio
            ),
            (text_train,),
        ),
        (
            "duplicates_test",
            DataDuplicates(columns=["review_body"]).add_condition_ratio_less_or_equal(
                th.max_duplicate_ratio
            ),
            (text_test,),
        ),
        (
            "conflicting_labels_train",
            ConflictingLabels(
                columns=["review_body"]
            ).add_condition_ratio_of_conflicting_labels_less_or_equal(th.max_conflicting_ratio),
            (text_train,),
        ),
        (
            "conflicting_labels_test",
            ConflictingLabels(
                columns=["review_body"]
            ).add_condition_ratio_of_conflicting_labels_less_or_equal(th.max_conflicting_ratio),
            (text_test,),
        ),
        ("label_balance_train", ClassImbalance(), (props_train,)),
        ("text_property_outliers_train", OutlierSampleDetection(n_samples=2000), (numeric_train,)),
        (
            "label_drift",
            LabelDrift().add_condition_drift_score_less_than(th.max_label_drift),
            (props_train, props_test),
        ),
        (
            "property_drift",
            FeatureDrift(columns=list(PROPERTIES)).add_condition_drift_score_less_than(
                th.max_property_drift, th.max_property_drift
            ),
            (props_train, props_test),
        ),
        (
            "new_category_in_test",
            NewCategoryTrainTest().add_condition_new_categories_less_or_equal(0),
            (props_train, props_test),
        ),
        (
            "train_test_text_overlap",
            TrainTestSamplesMix(
                columns=["review_body"]
            ).add_condition_duplicates_ratio_less_or_equal(th.max_text_overlap),
            (text_train, text_test),
        ),
    ]
    from deepchecks.core.errors import NotEnoughSamplesError

    outcomes, results = [], []
    for name, check, data in plan:
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = check.run(*data) if len(data) == 1 else check.run(data[0], data[1])
        except NotEnoughSamplesError as e:  # a tiny split: a failed check, not a traceback
            outcomes.append(CheckOutcome(name, False, float("nan"), "see condition",
                                         f"too few rows to run: {e}", "deepchecks",
                                         time.perf_counter() - start,
                                         advice=TOO_FEW_ROWS))  # fmt: skip
            continue
        seconds = time.perf_counter() - start
        results.append(result)
        outcomes.append(_outcome(name, result, seconds, th))
    return outcomes, results


def _outcome(name: str, result: object, seconds: float, th: Thresholds) -> CheckOutcome:
    if name == "label_balance_train":
        shares = dict(result.value)
        ratio = min(shares.values()) / max(shares.values()) if shares else 0.0
        return CheckOutcome(
            name,
            ratio >= th.min_class_ratio,
            ratio,
            th.min_class_ratio,
            f"least/most frequent label ratio {ratio:.3f} (the train step weights the loss by "
            "class; fatal only below the threshold)",
            "deepchecks",
            seconds,
        )
    if name == "text_property_outliers_train":
        scores = result.value if isinstance(result.value, pd.DataFrame) else None
        share = (
            float((scores.iloc[:, 0] > 0.9).mean()) if scores is not None and len(scores) else 0.0
        )
        return CheckOutcome(
            name,
            share <= th.max_outlier_ratio,
            share,
            th.max_outlier_ratio,
            f"{share:.2%} of rows with outlier probability > 0.9",
            "deepchecks",
            seconds,
        )
    conditions = result.conditions_results
    passed = all(c.is_pass() for c in conditions)
    detail = "; ".join(c.details for c in conditions) or "no condition"
    return CheckOutcome(
        name, passed, _headline_value(result.value), "see condition", detail, "deepchecks", seconds
    )


def _headline_value(value: object) -> float:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict):
        for key in ("percent_of_conflicting_samples", "ratio", "Drift score"):
            if key in value and isinstance(value[key], int | float):
                return float(value[key])
    return float("nan")
