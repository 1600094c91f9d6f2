"""What to change when a validation check fails: one line per check, naming the knob.

Validation runs before training, so its advice is about the data and the ingest parameters;
each line says what the check saw being wrong and which setting or data change fixes it.
"""

from __future__ import annotations

from dataclasses import replace

from components.validate.constraints import CheckOutcome

_ADVICE = {
    "min_row_count_train": "add reviews (the budget trains from about 500 training rows), "
    "and keep balance=false (undersampling drops rows)",
    "min_row_count_validation": "add reviews or raise validation_fraction",
    "min_row_count_test": "add reviews or raise test_fraction",
    "review_id_unique": "the input repeats review_ids across files: ingest keeps the first one "
    "per run, so two runs' outputs were mixed; ingest again into an empty prefix",
    "review_id_complete": "rows lack a review_id: fix the export that wrote the raw files",
    "star_rating_in_range": "star ratings outside 1..5 reached the splits: check the raw schema",
    "marketplace_in_set": "pass the marketplaces you expect with --marketplaces, or filter them",
    "helpful_votes_non_negative": "negative votes reached the splits: check the raw schema",
    "total_votes_ge_helpful_votes": "votes inconsistent: check the raw schema",
    "train_test_leakage_review_id": "a review sits in two splits: ingest again (its split is "
    "by text, so this means two runs were mixed under one prefix)",
    "empty_or_short_texts": "add review_headline to text_fields, or filter very short bodies",
    "duplicates_train": "keep dedupe on in ingest (each repeated text kept once)",
    "duplicates_test": "keep dedupe on in ingest (each repeated text kept once)",
    "conflicting_labels_train": "keep dedupe on in ingest (a repeated text keeps its majority "
    "label)",
    "conflicting_labels_test": "keep dedupe on in ingest (a repeated text keeps its majority "
    "label)",
    "label_balance_train": "a class this rare cannot be learnt even with a weighted loss: add "
    "reviews of it, or merge classes (label_mode=sentiment)",
    "text_property_outliers_train": "look at the outlier rows in the report: often a different "
    "language or a non-review text in the input",
    "label_drift": "train and test differ in stars: ingest's split is stratified by label, so "
    "the input changed between runs, or use more rows",
    "property_drift": "train and test texts differ: ingest again with more rows",
    "new_category_in_test": "a product category appears only in test: add its reviews to train "
    "(more rows) or ingest the categories together",
    "train_test_text_overlap": "keep dedupe on in ingest (identical texts then sit on one side)",
}


def with_advice(outcome: CheckOutcome) -> CheckOutcome:
    """``outcome`` with its advice filled in when it failed."""
    if outcome.passed or outcome.advice:
        return outcome
    return replace(outcome, advice=_ADVICE.get(outcome.name, "see the report"))
