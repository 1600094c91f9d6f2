r"""The ingest job: raw TSV (S3 or local) to Parquet splits, rejects and ``stats.json``.

Usage::

    python -m components.ingest --input s3://bucket/raw/ --output s3://bucket/runs/r1/ \\
        [--label-mode star_rating|sentiment] [--balance/--no-balance] [--split 0.9 0.05 0.05] \\
        [--seed 42] [--spark-master local[*]]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import re
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from components.common.cli import run_stage
from components.common.errors import ConfigurationError, InvalidInput, PlatformError
from components.common.schema import LabelMode, label_map_for
from components.common.settings import Settings
from components.common.storage import S3Storage, is_s3_uri
from components.ingest import inputs as raw_inputs
from components.ingest import udfs
from components.ingest.spark import (
    K8sOptions,
    ReadPath,
    build_spark_conf,
    choose_read_path,
    create_session,
    has_s3a,
    to_s3a,
)

logger = logging.getLogger(__name__)

TEXT_FIELDS = ("review_body", "review_headline")
SPLIT_DIRS = ("train", "validation", "test")
ROWS_PER_OUTPUT_FILE = 1_000_000


@dataclass(frozen=True)
class IngestConfig:
    """Parameters of one ingest run, validated on creation."""

    input: str
    output: str
    label_mode: LabelMode = LabelMode.STAR_RATING
    balance: bool = True
    split: tuple[float, float, float] = (0.9, 0.05, 0.05)
    seed: int = 42
    spark_master: str = "local[*]"
    driver_memory: str = "2g"
    text_fields: tuple[str, ...] = ("review_body",)
    k8s: K8sOptions | None = None
    feedback: str = ""  # labelled review-queue files (CSV/Parquet), read as extra raw rows

    def __post_init__(self) -> None:
        object.__setattr__(self, "label_mode", LabelMode.parse(self.label_mode))
        if len(self.split) != 3 or any(f <= 0 for f in self.split):
            raise ConfigurationError(f"split needs 3 positive fractions, got {self.split}")
        if abs(sum(self.split) - 1.0) > 1e-6:
            raise ConfigurationError(f"split fractions must sum to 1, got {sum(self.split):.4f}")
        unknown = [f for f in self.text_fields if f not in TEXT_FIELDS]
        if unknown or not self.text_fields:
            raise ConfigurationError(f"text_fields {unknown} not in: {', '.join(TEXT_FIELDS)}")
        if not re.match(r"^[1-9][0-9]*[mg]$", self.driver_memory):
            raise ConfigurationError(f"driver_memory {self.driver_memory!r}: use e.g. 2g or 1536m")
        if not re.match(r"^(local(\[(\*|\d+)\])?|k8s://.+|spark://.+)$", self.spark_master):
            raise ConfigurationError(
                f"spark_master {self.spark_master!r}: "
                "use local[*], local[N], k8s://... or spark://..."
            )


@dataclass
class Stats:
    """What ``stats.json`` holds; the sums are checked before it is written."""

    rows_read: int = 0
    rows_accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    classes_before: dict[str, int] = field(default_factory=dict)
    classes_after: dict[str, int] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)
    split_classes: dict[str, dict[str, int]] = field(default_factory=dict)
    label_map: dict = field(default_factory=dict)
    inputs: list[dict] = field(default_factory=list)
    input_status: dict[str, str] = field(default_factory=dict)
    data_version: str = ""
    feedback: dict = field(default_factory=dict)
    read_path: str = ""
    text_cleaner: str = ""
    blank_lines: int = 0
    config: dict = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)


class StageTimer:
    """Logs each stage as it starts and ends, and records its wall time."""

    def __init__(self, timings: dict[str, float]) -> None:
        self.timings = timings

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        logger.info("▶ %s", name)
        start = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - start, 3)
        logger.info("✔ %s (%.1fs)", name, self.timings[name])


def data_version(files: list[raw_inputs.InputFile]) -> str:
    """A short digest of the input list and each file's version: the lineage data version."""
    digest = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.uri):
        digest.update(f"{f.uri}\0{f.size}\0{f.version}\n".encode())
    return digest.hexdigest()[:16]


def read_lines(spark: Any, paths: list[str]) -> Any:
    from pyspark.sql import functions as F

    lines = spark.read.text(paths).select(
        "value", F.col("_metadata.file_path").alias("source_file")
    )
    return lines.withColumn("_row_id", F.monotonically_increasing_id())


def _error_summary(e: Exception) -> str:
    """The most telling line of a Spark/py4j error (the innermost cause), not the trace."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    exception = r"^(?:Caused by:\s*|:\s*)?([\w.$]+(?:Error|Exception)\b.*)"
    causes = [m.group(1) for line in lines if (m := re.match(exception, line))]
    return (causes[-1] if causes else lines[0] if lines else type(e).__name__)[:300]


def read_failure(e: Exception, inputs: dict[str, str]) -> InvalidInput:
    """One line for a failed Spark job: the input file it names (as the user named it), why.

    ``inputs`` maps what Spark read (a local path or an s3a:// URI) to the input's name.
    """
    summary = _error_summary(e)
    match = re.search(r"((?:s3a|file):/+[^\s,'\"]+?)\.?(?:\s|$)", str(e))
    if not match:
        return InvalidInput(f"Spark failed: {summary}")
    named = match.group(1)
    local = re.sub(r"^file:/+", "/", named)
    display = inputs.get(named) or inputs.get(local) or named
    if display.endswith(".gz") and re.search(r"EOFException|ZipException|gzip", summary):
        return InvalidInput(f"{display}: unreadable gzip ({summary})")
    return InvalidInput(f"Spark failed on {display}: {summary}")


def _write_parquet(df: Any, path: str, rows: int) -> None:
    files = max(1, rows // ROWS_PER_OUTPUT_FILE)
    df.coalesce(files).write.mode("overwrite").parquet(path)


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
        _transform_and_write(spark, paths, config, label_map, local_out, stats, timer, clean)
        _check_sums(stats)
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


def _transform_and_write(
    spark: Any,
    paths: dict[str, str],
    config: IngestConfig,
    label_map: Any,
    out: str,
    stats: Stats,
    timer: StageTimer,
    clean: Any = None,
) -> None:
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException
    from pyspark.sql import functions as F

    from components.ingest import transforms as tr

    try:
        with timer.stage("read, parse and quarantine"):
            lines = read_lines(spark, list(paths))
            body = lines.filter(F.col("value") != raw_inputs.HEADER)
            # One cached copy of the parsed rows, with only the columns later steps read;
            # duplicates (a broadcast join of the few repeated ids) and labels are cheap to
            # derive again for each later action. The raw line and its file, the widest
            # columns, are kept for rejected rows only: at 5M rows they pushed the cache out of
            # memory. Duplicates, valid rows when cached, get theirs from a second read.
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
        stats.rejected = {reason: 0 for reason in tr.REJECT_REASONS}
        before: dict[int, int] = {}
        for row in counts:
            if row["reason"] == tr.BLANK:
                stats.blank_lines += row["count"]
                continue
            stats.rows_read += row["count"]
            if row["reason"] is None:
                before[row["label"]] = before.get(row["label"], 0) + row["count"]
            else:
                stats.rejected[row["reason"]] += row["count"]
        stats.rows_accepted = sum(before.values())
        stats.classes_before = {label_map.id2label[k]: v for k, v in sorted(before.items())}
        logger.info(
            "rows read %d, accepted %d, rejected %s",
            stats.rows_read, stats.rows_accepted, {k: v for k, v in stats.rejected.items() if v},
        )  # fmt: skip
        with timer.stage("write rejects"):
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
        if not before:
            raise InvalidInput(f"no valid rows in the input; rejects by reason: {stats.rejected}")
        missing = [label_map.id2label[i] for i in label_map.id2label if i not in before]
        if missing and config.balance:
            logger.warning("classes %s have no rows; balancing over the others", missing)
        with timer.stage("label, balance and split"):
            accepted = classified.filter(F.col("reason").isNull())
            out_df = (
                tr.balance_and_split(accepted, before, config.split, config.seed, config.balance)
                .select("split", *tr.OUTPUT_COLUMNS)
                .persist()
            )
            for row in sorted(out_df.groupBy("split", "label").count().collect()):
                per = stats.split_classes.setdefault(row["split"], {})
                per[label_map.id2label[row["label"]]] = row["count"]
        for name in tr.SPLIT_NAMES:
            stats.splits[name] = sum(stats.split_classes.get(name, {}).values())
        after: dict[str, int] = {}
        for per in stats.split_classes.values():
            for label, n in per.items():
                after[label] = after.get(label, 0) + n
        stats.classes_after = {
            name: after[name] for name in label_map.id2label.values() if name in after
        }
        with timer.stage("write splits"):
            for name in tr.SPLIT_NAMES:
                part = out_df.filter(F.col("split") == name).drop("split")
                _write_parquet(part, f"{out}/{name}", stats.splits[name])
        base.unpersist()
        out_df.unpersist()
    except (Py4JJavaError, PySparkException) as e:
        raise read_failure(e, paths) from e


_REJECTS_ONLY = ("raw_line", "source_file")


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


def _check_sums(stats: Stats) -> None:
    """Nothing vanishes: accepted + rejected = read, and splits add up to what was kept."""
    if stats.rows_accepted + sum(stats.rejected.values()) != stats.rows_read:
        raise PlatformError(f"row accounting is off: {stats.rows_read} read, {stats}")
    if sum(stats.splits.values()) != sum(stats.classes_after.values()):
        raise PlatformError(f"split accounting is off: {stats.splits} vs {stats.classes_after}")


def parse_args(argv: list[str] | None) -> IngestConfig:
    parser = argparse.ArgumentParser(
        prog="python -m components.ingest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--input", required=True, help="s3:// prefix, local directory or file")
    parser.add_argument("--output", required=True, help="s3:// prefix or local directory")
    parser.add_argument(
        "--label-mode", default="star_rating", choices=[m.value for m in LabelMode],
        help="5 star classes or 3 sentiment classes",
    )  # fmt: skip
    parser.add_argument(
        "--balance", action=argparse.BooleanOptionalAction, default=True,
        help="undersample every class to the smallest (the book's default)",
    )  # fmt: skip
    parser.add_argument(
        "--split", nargs=3, type=float, default=[0.9, 0.05, 0.05],
        metavar=("TRAIN", "VALIDATION", "TEST"), help="stratified split fractions",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=42, help="seed of balancing and splitting")
    parser.add_argument("--feedback", default="",
                        help="labelled review-queue files (s3:// prefix or directory)")  # fmt: skip
    parser.add_argument(
        "--text-fields", nargs="+", default=["review_body"], choices=TEXT_FIELDS,
        help="fields folded into the cleaned review_body (e.g. add review_headline)",
    )  # fmt: skip
    parser.add_argument(
        "--spark-master", default="local[*]", help="local[*], local[N] or k8s://https://<api>"
    )
    parser.add_argument(
        "--driver-memory", default="2g",
        help="the driver's JVM heap (with local[*], all of Spark's); e.g. 2g, 1536m",
    )  # fmt: skip
    parser.add_argument("--k8s-image", default=None, help="executor image for a k8s:// master")
    parser.add_argument("--k8s-namespace", default="review-classifier", help="executor namespace")
    parser.add_argument("--k8s-service-account", default="review-classifier-spark",
                        help="executors' service account (IRSA for S3)")  # fmt: skip
    parser.add_argument("--executors", type=int, default=4, help="executor count on k8s")
    parser.add_argument("--executor-cores", type=int, default=2, help="cores per executor")
    parser.add_argument("--executor-memory", default="8g", help="memory per executor")
    args = parser.parse_args(argv)
    k8s = None
    if args.spark_master.startswith("k8s://"):
        image = args.k8s_image or Settings.from_env().image("spark")
        k8s = K8sOptions(
            image, args.k8s_namespace, args.k8s_service_account, args.executors,
            args.executor_cores, args.executor_memory,
        )  # fmt: skip
    return IngestConfig(
        input=args.input, output=args.output, label_mode=args.label_mode, balance=args.balance,
        split=tuple(args.split), seed=args.seed, spark_master=args.spark_master,
        driver_memory=args.driver_memory,
        text_fields=tuple(args.text_fields), k8s=k8s, feedback=args.feedback,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    stats = run_stage("ingest", lambda: run_ingest(parse_args(argv)))
    if stats is None:
        return 1
    print(json.dumps({"splits": stats.splits, "rejected": stats.rejected}, sort_keys=True))
    return 0
