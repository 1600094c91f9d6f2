"""KFP interface of the score stage: a thin component whose body calls the job."""

from kfp import dsl
from kfp.dsl import Artifact, Metrics, Output

from components.common.images import image


@dsl.component(base_image=image("spark"), install_kfp_package=False)
def score(
    input_uri: str,
    output_uri: str,
    summary: Output[Artifact],
    metrics: Output[Metrics],
    model: str = "",
    model_version: str = "",
    input_format: str = "auto",
    spark_master: str = "local[*]",
    precision: str = "auto",
    variant: str = "auto",
) -> str:
    """Rate every review under ``input_uri`` with a registered model; Parquet to ``output_uri``."""
    import json

    from components.common.artifacts import write_metrics_file
    from components.common.logs import configure_logging
    from components.score.job import ScoreConfig, run_scoring

    configure_logging()
    result = run_scoring(ScoreConfig(input=input_uri, output=output_uri, model=model,
                                     model_version=model_version, input_format=input_format,
                                     spark_master=spark_master, precision=precision,
                                     variant=variant))  # fmt: skip
    with open(summary.path, "w") as f:
        json.dump(result, f, indent=2)
    summary.metadata.update({"output": output_uri, "model": result["model"]})
    for key in ("rows_read", "rows_scored", "rows_rejected", "rows_per_s", "seconds"):
        metrics.log_metric(key, result[key])
    write_metrics_file(metrics)
    return output_uri
