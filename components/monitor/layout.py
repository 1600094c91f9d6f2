"""Where monitoring data lives on S3 (under the data bucket), one place for every reader."""

from __future__ import annotations

from components.common.settings import Settings

CAPTURE_PREFIX = "monitoring/captured/"  # the sink's Parquet: model_version=<v>/hour=<h>/
REPORTS_PREFIX = "monitoring/reports/"  # one folder per monitor run
REVIEW_QUEUE_PREFIX = "monitoring/review-queue/"  # low-confidence predictions to label
LABELLED_PREFIX = "monitoring/labelled/"  # labelled files put back here; ingest reads them


def capture_uri(settings: Settings) -> str:
    return f"s3://{settings.data_bucket}/{CAPTURE_PREFIX}"


def reports_uri(settings: Settings) -> str:
    return f"s3://{settings.data_bucket}/{REPORTS_PREFIX}"


def review_queue_uri(settings: Settings) -> str:
    return f"s3://{settings.data_bucket}/{REVIEW_QUEUE_PREFIX}"


def labelled_uri(settings: Settings) -> str:
    return f"s3://{settings.data_bucket}/{LABELLED_PREFIX}"
