r"""The ingest job: raw TSV (S3 or local) to Parquet splits, rejects and ``stats.json``.

Usage::

    python -m components.ingest --input s3://bucket/raw/ --output s3://bucket/runs/r1/ \\
        [--label-mode star_rating|sentiment] [--balance/--no-balance] [--split 0.9 0.05 0.05] \\
        [--seed 42] [--spark-master local[*]]
"""

from __future__ import annotations

import json
import logging
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from components.common.cli import run_stage
from components.common.errors import InvalidInput
from components.common.schema import label_map_for
from components.common.settings import Settings
from components.common.storage import S3Storage, is_s3_uri
from components.ingest import inputs as raw_inputs
from components.ingest import udfs
from components.ingest.config import IngestConfig, parse_args
from components.ingest.spark import (
    K8sOptions,
    ReadPath,
    build_spark_conf,
    choose_read_path,
    create_session,
    has_s3a,
    to_s3a,
)
from components.ingest.stats import StageTimer, Stats, check_sums, data_version
from components.ingest.write import transform_and_write

logger = logging.getLogger(__name__)

SPLIT_DIRS = ("train", "validation", "test")


def run_ingest(
    config: IngestConfig, settings: Settings | None = None, local_copy: str | None = None
) -> Stats:
    """Run the whole ingest; returns the stats that were also written to ``stats.json``.

    When Spark writes locally before the upload to an S3 ``output`` (no S3A connector), it
    writes into ``local_copy`` if given, which then stays: a caller that needs the files too
    (the KFP component's artifacts) copies them from there instead of downloading them again.
    """
    settings = settings or Settings.from_env()
    stats = Stats(config={**asdict(config), "label_mode": config.label_mode.value})
    timer = StageTimer(stats.timings_s)
    label_map = label_map_for(config.label_mode)
    stats.label_map = label_map.to_dict()
    needs_s3 = any(is_s3_uri(u) for u in (config.input, config.output, config.feedback))
    storage = S3Storage(settings) if needs_s3 else None
    with tempfile.TemporaryDirectory(prefix="ingest-") as tmp:
        # The JVM starts while the inputs are listed and, when local, checked (the checksums
        # read every byte): their timings overlap.
        with ThreadPoolExecutor(1, thread_name_prefix="spark-start") as pool:
            starting = pool.submit(start_spark, config, settings, stats, timer)
            with timer.stage("list and check inputs"):
                files = raw_inputs.list_inputs(config.input, storage)
                stats.inputs = [f.to_dict() for f in files]
                stats.data_version = data_version(files)
                if not is_s3_uri(config.input):
                    paths = prepare_inputs(files, ReadPath.LOCAL, storage, Path(tmp), stats)
            spark, clean = starting.result()
        read_path = choose_read_path(config.input, has_s3a(spark))
        stats.read_path = read_path.value
        logger.info("read path: %s (%s)", read_path.value, _READ_PATH_NOTES[read_path])
        logger.info("text cleaning: %s", stats.text_cleaner)
        if read_path is not ReadPath.LOCAL:
            with timer.stage(f"{'stage and ' if read_path is ReadPath.STAGED else ''}check inputs"):
                paths = prepare_inputs(files, read_path, storage, Path(tmp) / "raw", stats)
        if config.feedback:
            with timer.stage("read labelled feedback"):
                paths.update(feedback_inputs(config, storage, read_path, Path(tmp), stats))
                stats.data_version = data_version(
                    [*files, *(raw_inputs.InputFile(f["uri"], f["size"], f["etag"])
                               for f in stats.inputs[len(files):])]
                )  # fmt: skip
        local_out = config.output
        if is_s3_uri(config.output) and read_path is not ReadPath.S3A:
            local_out = local_copy or str(Path(tmp) / "out")
        elif is_s3_uri(config.output):
            local_out = to_s3a(config.output)
        transform_and_write(spark, paths, config, label_map, local_out, stats, timer, clean)
        check_sums(stats)
        with timer.stage("write stats and upload"):
            if local_out.startswith("s3a://"):
                storage.put_json(config.output.rstrip("/") + "/stats.json", asdict(stats))
            else:
                Path(local_out).mkdir(parents=True, exist_ok=True)
                (Path(local_out) / "stats.json").write_text(json.dumps(asdict(stats), indent=2))
                if local_out != config.output:
                    _replace_outputs(storage, local_out, config.output)
    return stats


def start_spark(
    config: IngestConfig, settings: Settings, stats: Stats, timer: StageTimer
) -> tuple[Any, Any]:
    """The Spark session, with the cleaning UDF when its jar could be had (else None)."""
    with timer.stage("start spark"):
        k8s = config.k8s
        if k8s is None and config.spark_master.startswith("k8s://"):  # the KFP component
            k8s = K8sOptions(settings.image("spark"))
        jar = udfs.find_jar()
        jars = [str(jar)] if jar else None
        conf = build_spark_conf(
            config.spark_master, settings, k8s, driver_memory=config.driver_memory, jars=jars
        )
        spark = create_session(conf)
        clean = udfs.clean_text_udf if jar and udfs.register(spark) else None
        stats.text_cleaner = "jvm-udf" if clean else "spark-regex"
    return spark, clean


def _replace_outputs(storage: S3Storage, local_out: str, output: str) -> None:
    """Upload like Spark's ``mode("overwrite")``: old part files under the prefix go first.

    Part-file names are random, so uploading over an earlier run's output would otherwise
    leave both runs' rows under the same prefix.
    """
    base = output.rstrip("/")
    for name in (*SPLIT_DIRS, "rejects"):
        storage.delete_prefix(f"{base}/{name}/")
    storage.upload_dir(local_out, output)


_READ_PATH_NOTES = {
    ReadPath.LOCAL: "local files",
    ReadPath.S3A: "Spark reads s3a:// directly",
    ReadPath.STAGED: "no S3A connector in this Spark runtime; staging objects with boto3",
}


def prepare_inputs(
    files: list[raw_inputs.InputFile],
    read_path: ReadPath,
    storage: S3Storage | None,
    stage_dir: Path,
    stats: Stats,
) -> dict[str, str]:
    """Check every input's header; map each path Spark should read to the input's name."""
    if read_path is ReadPath.S3A:
        statuses = [raw_inputs.check_s3_header(storage, f) for f in files]
        paths = [to_s3a(f.uri) for f in files]
    else:
        local = (
            raw_inputs.stage_inputs(files, storage, stage_dir)
            if read_path is ReadPath.STAGED
            else [Path(f.uri) for f in files]
        )
        statuses = [raw_inputs.check_raw_file(p, f.uri) for p, f in zip(local, files, strict=True)]
        paths = [str(p) for p in local]
    stats.input_status = {f.uri: s for f, s in zip(files, statuses, strict=True)}
    readable = {p: f.uri for p, f, s in zip(paths, files, statuses, strict=True) if s == "ok"}
    if not readable:
        raise InvalidInput("no input file has any data row (all are empty or header-only)")
    return readable


def feedback_inputs(config: IngestConfig, storage: S3Storage | None, read_path: ReadPath,
                    tmp: Path, stats: Stats) -> dict[str, str]:  # fmt: skip
    """Labelled review-queue files as raw TSV that Spark reads with the raw files.

    Only rows with a label become raw rows; ingest's own rules then validate and quarantine
    them like any raw row (a label that is not 1-5 is a ``star_rating`` reject).
    """
    from components.monitor import feedback as fb

    found = fb.list_labelled_files(config.feedback, storage)
    if not found:
        logger.info("no labelled feedback under %s", config.feedback)
    paths: dict[str, str] = {}
    labelled = skipped = 0
    for index, (uri, size, etag, data) in enumerate(found):
        df = fb.read_labelled(data, uri)
        rows = len(fb.labelled_rows(df))
        labelled, skipped = labelled + rows, skipped + len(df) - rows
        local = tmp / "feedback" / f"feedback-{index:05d}.tsv"
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text(fb.to_raw_rows(df))
        path = str(local)
        if read_path is ReadPath.S3A:  # executors cannot read the driver's disk
            staged = f"{config.output.rstrip('/')}/feedback-input/{local.name}"
            storage.upload_file(local, staged)
            path = to_s3a(staged)
        paths[path] = uri
        stats.inputs.append({"uri": uri, "size": size, "etag": etag, "kind": "feedback"})
    stats.feedback = {"uri": config.feedback, "files": len(found), "labelled_rows": labelled,
                      "unlabelled_rows_skipped": skipped}  # fmt: skip
    logger.info("labelled feedback: %d rows from %d files (%d unlabelled rows skipped)",
                labelled, len(found), skipped)  # fmt: skip
    return paths


def main(argv: list[str] | None = None) -> int:
    stats = run_stage("ingest", lambda: run_ingest(parse_args(argv)))
    if stats is None:
        return 1
    print(json.dumps({"splits": stats.splits, "rejected": stats.rejected}, sort_keys=True))
    return 0
