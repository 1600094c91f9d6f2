"""The human review queue and the labels that come back from it.

Out: predictions below the confidence threshold as a labelling file (CSV for people,
Parquet for tools) with an empty ``label`` column and, where the predictor computed them, the
``top_words`` that pushed the model toward its answer (why it hesitated), under
``s3://<bucket>/monitoring/review-queue/<model version>/<time>/``.

Back: a labeller fills ``label`` (a star rating 1-5) and puts the file (CSV or Parquet, any
name) under ``s3://<bucket>/monitoring/labelled/``. The retrain freezes what is there into an
immutable snapshot (``snapshot_labelled``) and ingest reads it as raw rows
(``to_raw_rows``), so labels are validated and quarantined like any raw review.
"""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path

import pandas as pd

from components.common.schema import RAW_COLUMNS, RAW_SEPARATOR
from components.common.storage import S3Storage, is_s3_uri, parse_s3_uri

logger = logging.getLogger(__name__)

QUEUE_COLUMNS = ("request_id", "instance", "time", "model_version", "text", "predicted_star",
                 "predicted_label", "confidence", "probabilities", "top_words",
                 "label")  # fmt: skip
LABELLED_SUFFIXES = (".csv", ".parquet")
SNAPSHOTS = "monitoring/feedback-snapshots/"
FEEDBACK_CATEGORY = "Feedback"  # product_category of rows without one


def review_queue(records: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Predictions below ``threshold`` confidence, least confident first, ``label`` empty."""
    low = records[records["confidence"] < threshold].sort_values("confidence")
    if "top_words" not in low:  # captured before predictions carried top words
        low = low.assign(top_words="")
    low = low.assign(top_words=low["top_words"].fillna(""), label="")
    return low[list(QUEUE_COLUMNS)].reset_index(drop=True)


def write_queue(queue: pd.DataFrame, uri: str, storage: S3Storage) -> list[str]:
    """The queue as ``review-queue.csv`` and ``review-queue.parquet`` under ``uri``."""
    base = uri.rstrip("/")
    csv = queue.to_csv(index=False).encode()
    buffer = io.BytesIO()
    queue.to_parquet(buffer, index=False)
    parquet = buffer.getvalue()
    targets = [
        (f"{base}/review-queue.csv", csv, "text/csv"),
        (f"{base}/review-queue.parquet", parquet, "application/vnd.apache.parquet"),
    ]
    for target, data, kind in targets:
        storage.put_bytes(target, data, kind)
    return [t for t, _, _ in targets]


def read_labelled(data: bytes, name: str) -> pd.DataFrame:
    """One labelled file (CSV or Parquet) with every column as text; '' where missing."""
    if name.endswith(".parquet"):
        df = pd.read_parquet(io.BytesIO(data))
    else:
        df = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    return df.astype(str).replace({"nan": "", "None": "", "<NA>": ""})


def labelled_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows somebody labelled (a non-blank ``label``); unlabelled rows are not feedback."""
    if "label" not in df:
        return df.iloc[0:0]
    return df[df["label"].str.strip() != ""]


def to_raw_rows(df: pd.DataFrame) -> str:
    """Labelled rows as raw TSV (header + rows) for ingest, which validates every field.

    The label becomes ``star_rating`` as written (ingest quarantines one that is not 1-5), the
    text ``review_body``; tabs and newlines in the text become spaces (the raw format has no
    quoting).
    """
    rows = labelled_rows(df)

    def col(name: str, default: str = "") -> pd.Series:
        return rows[name] if name in rows else pd.Series(default, index=rows.index)

    day = pd.to_datetime(col("time"), errors="coerce", utc=True).dt.strftime("%Y-%m-%d")
    raw = pd.DataFrame({
        "marketplace": "US", "customer_id": "0",
        "review_id": "fb-" + col("request_id") + "-" + col("instance", "0"),
        "product_id": "feedback", "product_parent": "0",
        "product_title": "", "product_category": col("product_category", FEEDBACK_CATEGORY)
        .replace("", FEEDBACK_CATEGORY),
        "star_rating": col("label").str.strip(), "helpful_votes": "0", "total_votes": "0",
        "vine": "N", "verified_purchase": "N", "review_headline": "",
        "review_body": col("text").str.replace(r"[\t\r\n]+", " ", regex=True),
        "review_date": day.fillna(""),
    })[list(RAW_COLUMNS)]  # fmt: skip
    lines = [RAW_SEPARATOR.join(RAW_COLUMNS)]
    lines += [RAW_SEPARATOR.join(r) for r in raw.itertuples(index=False, name=None)]
    return "\n".join(lines) + "\n"


def list_labelled(uri: str, storage: S3Storage) -> list:
    return [o for o in storage.list_objects(uri) if o.key.endswith(LABELLED_SUFFIXES)]


def list_labelled_files(uri: str, storage: S3Storage | None) -> list[tuple[str, int, str, bytes]]:
    """(uri, size, version, bytes) of every labelled file under an S3 prefix or directory."""
    if is_s3_uri(uri):
        bucket = parse_s3_uri(uri).bucket
        return [(f"s3://{bucket}/{o.key}", o.size, o.etag,
                 storage.get_bytes(f"s3://{bucket}/{o.key}"))
                for o in list_labelled(uri, storage)]  # fmt: skip
    files = sorted(p for p in Path(uri).rglob("*") if p.name.endswith(LABELLED_SUFFIXES))
    found = [(p, p.read_bytes()) for p in files]  # each file read once
    return [(str(p), len(data), hashlib.sha256(data).hexdigest(), data) for p, data in found]


def count_new_labels(uri: str, storage: S3Storage, used_etags: set[str]) -> int:
    """Labelled rows under ``uri`` in files the serving model was not trained with."""
    bucket = parse_s3_uri(uri).bucket
    total = 0
    for obj in list_labelled(uri, storage):
        if obj.etag in used_etags:
            continue
        df = read_labelled(storage.get_bytes(f"s3://{bucket}/{obj.key}"), obj.key)
        total += len(labelled_rows(df))
    return total


def snapshot_labelled(uri: str, storage: S3Storage) -> str:
    """Copy the labelled files to an immutable prefix named by their content; '' if none.

    The pipeline caches ingest on its parameters, so new labels under the same prefix need a
    new URI; the snapshot is also the exact feedback a model was trained with.
    """
    src = parse_s3_uri(uri)
    objects = list_labelled(uri, storage)
    if not objects:
        return ""
    digest = hashlib.sha256("".join(f"{o.key}:{o.etag};" for o in objects).encode()).hexdigest()
    dest = f"s3://{src.bucket}/{SNAPSHOTS}{digest[:16]}/"
    for o in objects:
        relative = o.key[len(src.prefix) :]
        storage.copy(f"s3://{src.bucket}/{o.key}", dest + relative)
    logger.info("labelled feedback: %d files frozen into %s", len(objects), dest)
    return dest
