"""KFP interface of the ingest stage: a thin component whose body calls the job."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Metrics, Output

from components.common.images import image

SPLITS = ("train", "validation", "test")


@dsl.component(base_image=image("spark"), install_kfp_package=False)
def ingest(
    input_uri: str,
    output_uri: str,
    train: Output[Dataset],
    validation: Output[Dataset],
    test: Output[Dataset],
    rejects: Output[Dataset],
    stats: Output[Artifact],
    metrics: Output[Metrics],
    train_fraction: float,
    validation_fraction: float,
    test_fraction: float,
    label_mode: str = "star_rating",
    balance: bool = False,
    dedupe: bool = True,
    seed: int = 42,
    spark_master: str = "local[*]",
    text_fields: str = "review_body",
    feedback_uri: str = "",
):
    """Raw review TSV under ``input_uri`` to Parquet splits under ``output_uri`` (S3 prefix)."""
    import hashlib
    import json
    import os
    import tempfile
    from dataclasses import asdict

    from components.common.artifacts import materialize, write_metrics_file
    from components.common.logs import configure_logging
    from components.ingest.config import IngestConfig
    from components.ingest.job import run_ingest

    configure_logging()
    # The output prefix is a function of the inputs, so a cached run and a fresh one with the
    # same inputs agree on where the data is, and other inputs never overwrite it.
    key = json.dumps([input_uri, label_mode, balance, train_fraction, validation_fraction,
                      test_fraction, seed, text_fields] + ([] if dedupe else ["no-dedupe"])
                     + ([feedback_uri] if feedback_uri else []))  # fmt: skip
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    with tempfile.TemporaryDirectory(prefix="ingest-out-") as tmp:
        out = f"{output_uri.rstrip('/')}/{digest}" if output_uri else tmp
        local_copy = f"{tmp}/local"  # written only when Spark writes locally before uploading
        result = run_ingest(
            IngestConfig(
                input=input_uri, output=out, label_mode=label_mode, balance=balance,
                dedupe=dedupe, split=(train_fraction, validation_fraction, test_fraction),
                seed=seed, spark_master=spark_master, text_fields=tuple(text_fields.split(",")),
                feedback=feedback_uri,
            ),
            local_copy=local_copy,
        )  # fmt: skip
        base = out.rstrip("/")
        # The artifacts come from the local copy when there is one, else from the output.
        source = local_copy if os.path.isdir(local_copy) else base
        for name, artifact in (("train", train), ("validation", validation), ("test", test)):
            materialize(f"{source}/{name}", artifact.path)
            artifact.metadata.update({"rows": result.splits[name], "uri": f"{base}/{name}"})
        materialize(f"{source}/rejects", rejects.path)
        rejects.metadata.update(
            {"rows": sum(result.rejected.values()), "by_reason": result.rejected}
        )
    with open(stats.path, "w") as f:
        json.dump(asdict(result), f, indent=2)
    stats.metadata.update({"data_version": result.data_version, "label_map": result.label_map})
    metrics.log_metric("rows_read", result.rows_read)
    metrics.log_metric("rows_accepted", result.rows_accepted)
    for reason, count in result.rejected.items():
        metrics.log_metric(f"rejected_{reason}", count)
    for name, count in result.splits.items():
        metrics.log_metric(f"rows_{name}", count)
    write_metrics_file(metrics)
