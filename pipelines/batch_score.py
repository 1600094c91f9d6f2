"""The batch-scoring pipeline: star ratings for every review under an S3 prefix.

The book's SageMaker Batch Transform, on Spark: one score step reads raw TSV/TSV.gz (or
Parquet) under ``input_uri``, quarantines malformed rows as ingest does, scores the rest with a
registered model version (the ``champion`` alias by default, or ``model_version``) and writes
Parquet under ``output_uri``. Runs through ``kfp.local`` on a laptop and on Kubeflow Pipelines.
"""

from kfp import dsl, kubernetes

from components.score.component import score
from pipelines.review_classifier import CONFIG_KEYS, CONFIG_MAP

PIPELINE_NAME = "batch-score"


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Score every review under an S3 prefix with a registered review-classifier "
    "version on Spark; Parquet predictions, quarantined rows and a summary.",
)
def batch_score(
    input_uri: str,
    output_uri: str,
    model: str = "models:/review-classifier@champion",
    model_version: str = "",
    input_format: str = "auto",
    spark_master: str = "local[*]",
    precision: str = "auto",
    variant: str = "auto",
) -> str:
    task = score(input_uri=input_uri, output_uri=output_uri, model=model,
                 model_version=model_version, input_format=input_format,
                 spark_master=spark_master, precision=precision, variant=variant)  # fmt: skip
    task.set_display_name("score (Spark)").set_caching_options(False)
    task.set_cpu_limit("8").set_memory_limit("32G")
    # With a k8s:// spark_master this pod is the Spark driver; executors reach it at its IP.
    kubernetes.use_field_path_as_env(task, env_name="POD_IP", field_path="status.podIP")
    kubernetes.use_config_map_as_env(task, CONFIG_MAP, {k: k for k in CONFIG_KEYS}, optional=True)
    return task.outputs["Output"]
