"""The score step: every review under a prefix rated by a registered model, on Spark.

Usage: ``python -m components.score --input s3://bucket/raw/ --output s3://bucket/scored/
[--model models:/review-classifier@champion] [--model-version N]``

Raw TSV/TSV.gz goes through the ingest step's own reader, parser and cleaning, so the same rows
are quarantined for the same reasons; Parquet needs ``review_id`` and ``review_body``. Valid rows
are scored by ``mapInPandas`` over Arrow batches (the model loaded once per Python worker,
batches sorted by length). Output, under ``--output``: ``predictions/`` (review_id,
product_category, star_rating, label, score, probabilities, model_name, model_version,
scored_at), ``rejects/`` and, last, ``_SUCCESS`` with the summary. Nothing is written under the
final prefix before the whole job has succeeded (write, then commit).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from components.common.cli import run_stage
from components.common.errors import (
    ConfigurationError,
    InvalidInput,
    ModelLoadError,
    StorageError,
)
from components.common.inference import PRECISIONS
from components.common.settings import Settings
from components.common.storage import S3Storage, is_s3_uri, parse_s3_uri
from components.score.model import ResolvedModel, resolve_model
from components.serve.variants import AUTO, VARIANTS, Choice, choose_variant, read_record

logger = logging.getLogger(__name__)

FORMATS = ("auto", "tsv", "parquet")
OUTPUT_DIRS = ("predictions", "rejects")
SUCCESS = "_SUCCESS"


@dataclass(frozen=True)
class ScoreConfig:
    """Inputs and knobs of one scoring job."""

    input: str
    output: str
    model: str = ""  # default: models:/<REGISTERED_MODEL_NAME>@champion
    model_version: str = ""
    input_format: str = "auto"
    spark_master: str = "local[*]"
    driver_memory: str = "2g"
    batch_size: int = 64
    precision: str = "auto"
    text_fields: tuple[str, ...] = field(default=("review_body",))
    # auto: the variant the gate chose for this machine (variants.json), as the predictor does;
    # with precision bf16 and no pin: torch-bf16; fp32: exact fp32 (ONNX's where the gate judged it)
    variant: str = AUTO

    def __post_init__(self) -> None:
        if self.input_format not in FORMATS:
            raise ConfigurationError(
                f"input_format {self.input_format!r} is not one of: {', '.join(FORMATS)}"
            )
        if self.precision not in PRECISIONS:
            raise ConfigurationError(
                f"precision {self.precision!r} is not one of: {', '.join(PRECISIONS)}"
            )
        if self.variant not in (AUTO, *VARIANTS):
            raise ConfigurationError(
                f"variant {self.variant!r} is not one of: {', '.join((AUTO, *VARIANTS))}"
            )
        if self.batch_size < 1:
            raise ConfigurationError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.input.rstrip("/") == self.output.rstrip("/"):
            raise ConfigurationError("output must differ from input")


@dataclass
class Summary:
    """What one scoring job did; written as ``_SUCCESS`` and returned."""

    input: str
    output: str
    model: dict
    input_format: str = ""
    rows_read: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    rows_per_s: float = 0.0
    variant: dict = field(default_factory=dict)  # which variant scored, and why


def _list_parquet(input_uri: str, storage: S3Storage | None) -> list[str]:
    if is_s3_uri(input_uri):
        bucket = parse_s3_uri(input_uri).bucket
        return [f"s3://{bucket}/{o.key}" for o in storage.list_objects(input_uri)
                if o.key.endswith(".parquet")]  # fmt: skip
    path = Path(input_uri)
    if path.is_file():
        return [str(path)] if path.suffix == ".parquet" else []
    return sorted(str(p) for p in path.rglob("*.parquet")) if path.is_dir() else []


def _detect_format(cfg: ScoreConfig, storage: S3Storage | None) -> tuple[str, list[Any]]:
    """``("tsv", [InputFile...])`` or ``("parquet", [uri...])``; an empty prefix is an error."""
    from components.ingest import inputs as raw_inputs

    if not is_s3_uri(cfg.input) and not Path(cfg.input).exists():
        raise InvalidInput(f"input {cfg.input} does not exist")
    if cfg.input_format in ("auto", "tsv"):
        try:
            return "tsv", raw_inputs.list_inputs(cfg.input, storage)
        except InvalidInput:
            if cfg.input_format == "tsv":
                raise
    parquet = _list_parquet(cfg.input, storage)
    if not parquet:
        kinds = "*.parquet" if cfg.input_format == "parquet" else "*.tsv, *.tsv.gz or *.parquet"
        raise InvalidInput(f"no review files ({kinds}) under {cfg.input}: nothing to score")
    return "parquet", parquet


def scoring_variant(local: str, cfg: ScoreConfig) -> Choice:
    """The variant to score with: pinned, or the one the predictor serves on this target."""
    import torch

    if cfg.variant == AUTO and cfg.precision == "bf16":
        return Choice("torch-bf16", "precision bf16 asked for")
    target = "gpu" if torch.cuda.is_available() else "cpu"
    record = read_record(local)
    if cfg.variant == AUTO and cfg.precision == "fp32":  # exact fp32: ONNX's where judged so
        onnx = ((record or {}).get("variants", {}).get("onnx-fp32") or {}).get("eligible")
        name = "onnx-fp32" if target == "cpu" and onnx else "torch-fp32"
        return Choice(name, "precision fp32 asked for")
    return choose_variant(record, target, cfg.variant)


def _load_on_driver(model: ResolvedModel, work: Path, cfg: ScoreConfig) -> tuple[str, Choice]:
    """A local copy of the model, loaded once here so an unreadable model fails in one line."""
    from components.serve.variants import load_variant
    from components.train.data import fetch_dir

    local = model.uri
    if is_s3_uri(model.uri):
        try:
            local = str(fetch_dir(model.uri, work / "model"))
        except StorageError as e:
            raise ModelLoadError(f"cannot download the model from {model.uri}: {e}") from e
    if not Path(local).is_dir() or not any(Path(local).iterdir()):
        raise ModelLoadError(f"model {model.uri} has no files")
    choice = scoring_variant(local, cfg)
    # raises ModelLoadError naming the directory and the reason (or a file not evaluated)
    load_variant(local, choice.variant)
    logger.info("scoring variant %s: %s", choice.variant, choice.reason)
    return local, choice


def run_scoring(cfg: ScoreConfig, settings: Settings | None = None) -> dict:
    """Resolve the model, read and quarantine, score, write then commit; returns the summary."""
    settings = settings or Settings.from_env()
    t0 = time.perf_counter()
    spec = cfg.model or f"models:/{settings.registered_model_name}@champion"
    model = resolve_model(spec, cfg.model_version, settings)
    logger.info("scoring with %s", model.to_dict())
    needs_s3 = is_s3_uri(cfg.input) or is_s3_uri(cfg.output) or is_s3_uri(model.uri)
    storage = S3Storage(settings) if needs_s3 else None
    summary = Summary(input=cfg.input, output=cfg.output, model=model.to_dict())
    with tempfile.TemporaryDirectory(prefix="score-") as tmp:
        work = Path(tmp)
        local_model, choice = _load_on_driver(model, work, cfg)
        summary.variant = choice.to_dict()
        summary.input_format, inputs = _detect_format(cfg, storage)
        from py4j.protocol import Py4JJavaError
        from pyspark.errors import PySparkException

        from components.ingest.failures import read_failure
        from components.score.read import read_reviews

        # Executors on this machine read the driver's copy; on a cluster each fetches its own.
        uri = local_model if cfg.spark_master.startswith("local") else model.uri
        staged = work / "out"
        spark, classified, paths = read_reviews(cfg, summary.input_format, inputs, storage,
                                                work, settings)  # fmt: skip
        try:
            _count(classified, summary)
            if not summary.rows_read:
                raise InvalidInput(f"no review rows under {cfg.input}")
            _score_and_write(spark, classified, cfg, model, uri, staged, choice.variant)
        except (Py4JJavaError, PySparkException) as e:
            raise read_failure(e, paths) from e
        finally:
            classified.unpersist()
        summary.seconds = round(time.perf_counter() - t0, 2)
        summary.rows_per_s = round(summary.rows_scored / max(summary.seconds, 1e-9), 1)
        (staged / SUCCESS).write_text(json.dumps(asdict(summary), indent=2))
        commit(staged, cfg.output, storage)
    logger.info("scored %d rows (%d quarantined) in %.1fs: %.0f rows/s -> %s",
                summary.rows_scored, summary.rows_rejected, summary.seconds, summary.rows_per_s,
                cfg.output)  # fmt: skip
    return asdict(summary)


def _count(classified: Any, summary: Summary) -> None:
    from components.ingest import transforms as tr

    counts = {row["reason"]: row["count"]
              for row in classified.groupBy("reason").count().collect()}  # fmt: skip
    counts.pop(tr.BLANK, None)
    summary.rows_read = sum(counts.values())
    summary.rows_scored = counts.get(None, 0)
    summary.rejected = {reason: counts.get(reason, 0) for reason in tr.REJECT_REASONS}
    summary.rows_rejected = sum(summary.rejected.values())


def _torch_threads(master: str, parallelism: int) -> int:
    """Cores per concurrent task on this machine (0: torch's default, on a cluster)."""
    if not master.startswith("local"):
        return 0
    return max(1, (os.cpu_count() or 1) // max(1, parallelism))


def _score_and_write(spark: Any, classified: Any, cfg: ScoreConfig, model: ResolvedModel,
                     uri: str, out: Path, variant: str) -> None:  # fmt: skip
    from pyspark.sql import functions as F

    from components.ingest import transforms as tr
    from components.score.predict import OUTPUT_SCHEMA, score_batches

    parallelism = spark.sparkContext.defaultParallelism
    valid = classified.filter(F.col("reason").isNull()).select(
        "review_id", "product_category", "review_body"
    )
    fn = partial(score_batches, uri=uri, name=model.name, version=model.version,
                 batch_size=cfg.batch_size, variant=variant,
                 threads=_torch_threads(cfg.spark_master, parallelism))  # fmt: skip
    scored = (valid.repartition(parallelism).mapInPandas(fn, OUTPUT_SCHEMA)
              .withColumn("scored_at", F.current_timestamp()))  # fmt: skip
    # No coalesce here: it would pull the scoring itself into fewer tasks than cores.
    scored.write.mode("overwrite").parquet(str(out / "predictions"))
    is_reject = F.col("reason").isNotNull() & (F.col("reason") != tr.BLANK)
    rejects = classified.filter(is_reject).select(
        "source_file", F.col("_row_id").alias("row_id"), "reason",
        F.make_valid_utf8("review_id").alias("review_id"),
        F.make_valid_utf8("raw_line").alias("raw_line"),
    )  # fmt: skip
    rejects.coalesce(1).write.mode("overwrite").parquet(str(out / "rejects"))


def commit(staged: Path, output: str, storage: S3Storage | None) -> None:
    """Publish a finished job's files under ``output``: earlier outputs replaced, ``_SUCCESS`` last.

    Locally the new directory replaces the old one by rename. On S3 the files go up under a
    ``_temporary/<id>/`` prefix first, are copied into place only once all are there, and
    ``_SUCCESS`` comes last, so a reader that checks it never sees a partial job.
    """
    if not is_s3_uri(output):
        final = Path(output)
        final.parent.mkdir(parents=True, exist_ok=True)
        incoming = final.with_name(f"{final.name}.tmp-{uuid.uuid4().hex[:8]}")
        shutil.copytree(staged, incoming)
        old = final.with_name(f"{final.name}.old-{uuid.uuid4().hex[:8]}")
        if final.exists():
            final.rename(old)
        incoming.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        return
    base = output.rstrip("/")
    temporary = f"{base}/_temporary/{uuid.uuid4().hex[:12]}/"
    try:
        storage.upload_dir(staged, temporary)
        storage.delete_prefix(f"{base}/{SUCCESS}")
        for name in OUTPUT_DIRS:
            storage.delete_prefix(f"{base}/{name}/")
        for obj in storage.list_objects(temporary):
            relative = obj.key[len(parse_s3_uri(temporary).key) :]
            if relative != SUCCESS:
                storage.copy(f"s3://{parse_s3_uri(base).bucket}/{obj.key}", f"{base}/{relative}")
        storage.copy(f"{temporary}{SUCCESS}", f"{base}/{SUCCESS}")
    finally:
        storage.delete_prefix(temporary)


def parse_args(argv: list[str] | None) -> ScoreConfig:
    d = ScoreConfig("", "-")
    p = argparse.ArgumentParser(prog="python -m components.score", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--input", required=True, help="s3:// prefix or local path of review files")
    p.add_argument("--output", required=True, help="s3:// prefix or local directory to write")
    p.add_argument("--model", default=d.model,
                   help="models:/<name>@<alias>, models:/<name>/<version>, or an s3:// prefix "
                   "or directory of a save_pretrained model (default: the champion)")  # fmt: skip
    p.add_argument("--model-version", default=d.model_version,
                   help="registry version number instead of the alias")  # fmt: skip
    p.add_argument("--input-format", choices=FORMATS, default=d.input_format,
                   help="raw TSV/TSV.gz or Parquet (auto: TSV when there is any)")  # fmt: skip
    p.add_argument("--spark-master", default=d.spark_master, help="local[*], local[N] or k8s://")
    p.add_argument("--driver-memory", default=d.driver_memory, help="Spark driver heap")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="reviews per forward pass")
    p.add_argument("--variant", choices=(AUTO, *VARIANTS), default=d.variant,
                   help="serving variant to score with (auto: the one the gate chose for this "
                   "machine, as the predictor serves it)")  # fmt: skip
    p.add_argument("--precision", choices=PRECISIONS, default=d.precision,
                   help="auto: fp32 on CPU, bf16/fp16 on GPUs; bf16 on a CPU is opt-in (fast "
                   "with AMX/AVX512-BF16; predictions can differ from fp32)")  # fmt: skip
    a = p.parse_args(argv)
    return ScoreConfig(a.input, a.output, a.model, a.model_version, a.input_format,
                       a.spark_master, a.driver_memory, a.batch_size, a.precision,
                       variant=a.variant)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    result = run_stage("score", lambda: run_scoring(parse_args(argv)))
    if result is None:
        return 1
    print(json.dumps({k: result[k] for k in ("rows_scored", "rows_rejected", "rows_per_s",
                                             "output")}))  # fmt: skip
    return 0
