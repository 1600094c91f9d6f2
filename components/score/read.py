"""Reading the reviews to score with the ingest step's own Spark reader, parser and rules.

Raw TSV/TSV.gz rows are parsed, cleaned and quarantined exactly as ingest does (same functions,
same reasons); Parquet rows need ``review_id`` and ``review_body`` and are cleaned the same way.
Either way the result has one row per input row with ``reason`` null for rows to score.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from components.common.errors import InvalidInput
from components.common.settings import Settings
from components.common.storage import S3Storage, is_s3_uri


def read_reviews(cfg: Any, fmt: str, inputs: list[Any], storage: S3Storage | None, work: Path,
                 settings: Settings) -> tuple[Any, Any, dict[str, str]]:  # fmt: skip
    """The Spark session, the classified rows (persisted) and what Spark read -> input names."""
    from components.ingest.config import IngestConfig
    from components.ingest.job import start_spark
    from components.ingest.spark import choose_read_path, has_s3a
    from components.ingest.stats import StageTimer, Stats

    ingest_cfg = IngestConfig(
        input=cfg.input, output=cfg.output, spark_master=cfg.spark_master,
        driver_memory=cfg.driver_memory, text_fields=cfg.text_fields,
    )  # fmt: skip
    stats = Stats()
    spark, clean = start_spark(ingest_cfg, settings, stats, StageTimer(stats.timings_s))
    read_path = choose_read_path(cfg.input, has_s3a(spark))
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    from components.ingest.failures import read_failure
    from components.ingest.job import prepare_inputs

    if fmt == "tsv":
        paths = prepare_inputs(inputs, read_path, storage, work / "raw", stats)
    else:
        paths = _stage_parquet(inputs, read_path, storage, work / "raw")
    try:  # finding duplicates already reads every file
        if fmt == "tsv":
            classified = _classify_tsv(spark, paths, cfg.text_fields, clean)
        else:
            classified = _classify_parquet(spark, list(paths), clean)
    except (Py4JJavaError, PySparkException) as e:
        raise read_failure(e, paths) from e
    return spark, classified.persist(), paths


def _classify_tsv(spark: Any, paths: dict[str, str], text_fields: tuple[str, ...],
                  clean: Any) -> Any:  # fmt: skip
    from pyspark.sql import functions as F

    from components.ingest import inputs as raw_inputs
    from components.ingest import transforms as tr
    from components.ingest.write import read_lines

    body = read_lines(spark, list(paths)).filter(F.col("value") != raw_inputs.HEADER)
    classified = tr.classify(tr.parse_lines(body), text_fields, clean or tr.clean_text_column)
    return tr.mark_duplicates(classified)


def _stage_parquet(uris: list[str], read_path: Any, storage: S3Storage | None,
                   stage_dir: Path) -> dict[str, str]:  # fmt: skip
    from components.ingest.spark import ReadPath, to_s3a

    if read_path is ReadPath.S3A:
        return {to_s3a(u): u for u in uris}
    paths = {}
    for i, uri in enumerate(uris):
        local = uri
        if is_s3_uri(uri):
            local = str(storage.download_file(uri, stage_dir / f"{i:05d}.parquet"))
        paths[local] = uri
    return paths


def _classify_parquet(spark: Any, paths: list[str], clean: Any) -> Any:
    from pyspark.sql import functions as F

    from components.ingest import transforms as tr

    df = spark.read.parquet(*paths)
    missing = {"review_id", "review_body"} - set(df.columns)
    if missing:
        raise InvalidInput(f"Parquet input lacks the column(s) {sorted(missing)}; it has "
                           f"{sorted(df.columns)}")  # fmt: skip
    category = F.col("product_category") if "product_category" in df.columns else F.lit(None)
    body = (clean or tr.clean_text_column)(F.coalesce(F.col("review_body").cast("string"),
                                                      F.lit("")))  # fmt: skip
    rows = df.select(
        F.col("review_id").cast("string").alias("review_id"),
        category.cast("string").alias("product_category"),
        body.alias("review_body"),
        F.col("_metadata.file_path").alias("source_file"),
        F.lit(None).cast("string").alias("raw_line"),
    ).withColumn("_row_id", F.monotonically_increasing_id())
    reason = F.when(F.col("review_body") == "", F.lit("empty_body"))
    return tr.mark_duplicates(rows.withColumn("reason", reason))
