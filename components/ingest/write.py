"""The Spark part of an ingest run, step by step, each recording its figures in the Stats.

Read, parse and quarantine; write the rejects; balance and split; write the splits.
"""

from __future__ import annotations

import logging
from typing import Any

from components.common.errors import InvalidInput, PlatformError
from components.ingest import inputs as raw_inputs
from components.ingest.config import IngestConfig
from components.ingest.failures import read_failure
from components.ingest.stats import StageTimer, Stats, record_counts, record_splits

logger = logging.getLogger(__name__)

ROWS_PER_OUTPUT_FILE = 1_000_000
# The widest columns, kept in the cache for rejected rows only (see parse_and_count).
_REJECTS_ONLY = ("raw_line", "source_file")


def read_lines(spark: Any, paths: list[str]) -> Any:
    """Every line of ``paths`` with its file and a row id (the same ids on a second read)."""
    from pyspark.sql import functions as F

    lines = spark.read.text(paths).select(
        "value", F.col("_metadata.file_path").alias("source_file")
    )
    return lines.withColumn("_row_id", F.monotonically_increasing_id())


def _write_parquet(df: Any, path: str, rows: int) -> None:
    files = max(1, rows // ROWS_PER_OUTPUT_FILE)
    df.coalesce(files).write.mode("overwrite").parquet(path)


def transform_and_write(
    spark: Any,
    paths: dict[str, str],
    config: IngestConfig,
    label_map: Any,
    out: str,
    stats: Stats,
    timer: StageTimer,
    clean: Any = None,
) -> None:
    """Raw lines to ``out``/{rejects,train,validation,test}; a Spark failure is one line."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    try:
        with timer.stage("read, parse and quarantine"):
            body, base, classified, counts = _parse_and_classify(spark, paths, config,
                                                                 label_map, clean)  # fmt: skip
        from components.ingest import transforms as tr

        stats.rejected = {reason: 0 for reason in tr.REJECT_REASONS}
        before = record_counts(stats, counts, label_map, tr.BLANK)
        with timer.stage("write rejects"):
            _write_rejects(classified, body, out, stats)
        if not before:
            raise InvalidInput(f"no valid rows in the input; rejects by reason: {stats.rejected}")
        missing = [label_map.id2label[i] for i in label_map.id2label if i not in before]
        if missing and config.balance:
            logger.warning("classes %s have no rows; balancing over the others", missing)
        with timer.stage("label, balance and split"):
            out_df = _balance_and_split(classified, before, config, label_map, stats)
        with timer.stage("write splits"):
            _write_splits(out_df, out, stats)
        base.unpersist()
        out_df.unpersist()
    except (Py4JJavaError, PySparkException) as e:
        raise read_failure(e, paths) from e


def _parse_and_classify(spark: Any, paths: dict[str, str], config: IngestConfig,
                        label_map: Any, clean: Any) -> tuple[Any, Any, Any, list]:  # fmt: skip
    """(header-less lines, the cached parsed rows, rows with reasons and labels, counts).

    One cached copy of the parsed rows, with only the columns later steps read; duplicates (a
    broadcast join of the few repeated ids) and labels are cheap to derive again for each later
    action. The raw line and its file, the widest columns, are kept for rejected rows only: at
    5M rows they pushed the cache out of memory. Duplicates, valid rows when cached, get theirs
    from a second read.
    """
    from pyspark.sql import functions as F

    from components.ingest import transforms as tr

    lines = read_lines(spark, list(paths))
    body = lines.filter(F.col("value") != raw_inputs.HEADER)
    parsed = tr.parse_lines(body)
    classified = tr.classify(parsed, config.text_fields, clean or tr.clean_text_column)
    rejected = F.col("reason").isNotNull()
    base = classified.select(
        *[
            F.when(rejected, F.col(c)).alias(c) if c in _REJECTS_ONLY else c
            for c in _cached_columns(tr.OUTPUT_COLUMNS)
        ]
    ).persist()
    classified = tr.add_labels(tr.mark_duplicates(base), label_map.star_to_label)
    counts = classified.groupBy("reason", "label").count().collect()
    return body, base, classified, counts


def _write_rejects(classified: Any, body: Any, out: str, stats: Stats) -> None:
    """Every quarantined row with its reason, file, row id and raw line (blank lines aside)."""
    from pyspark.sql import functions as F

    from components.ingest import transforms as tr

    is_reject = F.col("reason").isNotNull() & (F.col("reason") != tr.BLANK)
    rejects, reread = classified.filter(is_reject), None
    if stats.rejected["duplicate_review_id"]:
        rejects, reread = _read_duplicate_lines_again(
            rejects, body, stats.rejected["duplicate_review_id"]
        )
    rejects = rejects.select(
        "source_file",
        F.col("_row_id").alias("row_id"),
        "reason",
        F.make_valid_utf8("review_id").alias("review_id"),
        # Parquet strings must be UTF-8: invalid bytes become U+FFFD here.
        F.make_valid_utf8("raw_line").alias("raw_line"),
    )
    _write_parquet(rejects, f"{out}/rejects", sum(stats.rejected.values()))
    if reread is not None:
        reread.unpersist()


def _balance_and_split(classified: Any, before: dict[int, int], config: IngestConfig,
                       label_map: Any, stats: Stats) -> Any:  # fmt: skip
    """The accepted rows, balanced (if asked) and split; cached, counts recorded."""
    from pyspark.sql import functions as F

    from components.ingest import transforms as tr

    accepted = classified.filter(F.col("reason").isNull())
    if config.dedupe:
        # Before the split: a text kept once cannot sit in train and in test.
        stats.text_duplicates = {**tr.dedupe_counts(accepted), "policy": tr.DEDUPE_POLICY}
        accepted = tr.dedupe_texts(accepted).persist()
        before = {r["label"]: r["count"] for r in accepted.groupBy("label").count().collect()}
        logger.info("duplicate texts: %s", stats.text_duplicates)
    out_df = (
        tr.balance_and_split(accepted, before, config.split, config.seed, config.balance)
        .select("split", *tr.OUTPUT_COLUMNS)
        .persist()
    )
    counts = sorted(out_df.groupBy("split", "label").count().collect())
    record_splits(stats, counts, label_map, tr.SPLIT_NAMES)
    return out_df


def _write_splits(out_df: Any, out: str, stats: Stats) -> None:
    from pyspark.sql import functions as F

    from components.ingest import transforms as tr

    for name in tr.SPLIT_NAMES:
        part = out_df.filter(F.col("split") == name).drop("split")
        _write_parquet(part, f"{out}/{name}", stats.splits[name])


def _read_duplicate_lines_again(rejects: Any, body: Any, n_duplicates: int) -> tuple[Any, Any]:
    """Fill in the raw line and file of duplicate rejects by reading the input again.

    The same read (same files, same partitions) numbers its lines the same way; each line read
    back must carry the review_id its row was rejected for, or the job fails. Returns the
    rejects and the cached lines read back (the caller unpersists them once written).
    """
    from pyspark.sql import functions as F

    from components.ingest.transforms import DUPLICATE

    dups = rejects.filter(F.col("reason") == DUPLICATE).select(
        "_row_id", F.col("review_id").alias("_id")
    )
    side = F.broadcast(dups) if n_duplicates <= 2_000_000 else dups
    again = (
        body.select("_row_id", F.col("value").alias("_line"), F.col("source_file").alias("_file"))
        .join(side, "_row_id")
        .persist()
    )
    same_id = F.split("_line", "\t", -1)[2] == F.col("_id")
    check = again.agg(F.count("*").alias("n"), F.sum(same_id.cast("int")).alias("same")).first()
    if check["n"] != n_duplicates or check["same"] != n_duplicates:
        raise PlatformError(
            f"reading the {n_duplicates} duplicate rows again found {check['n']} "
            f"({check['same']} with the same review_id): did the input change during the run?"
        )
    filled = (
        rejects.join(again.drop("_id"), "_row_id", "left")
        .withColumn("raw_line", F.coalesce("raw_line", "_line"))
        .withColumn("source_file", F.coalesce("source_file", "_file"))
        .drop("_line", "_file")
    )
    return filled, again


def _cached_columns(output_columns: tuple[str, ...]) -> list[str]:
    """What the rejects and the splits read (``label`` is derived from star_rating again)."""
    return ["_row_id", "source_file", "raw_line", "reason"] + [
        c for c in output_columns if c != "label"
    ]
