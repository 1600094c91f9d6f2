"""``make monitor``: run the monitor and, when it says so, retrain on the new data.

Without ``KFP_HOST`` (the embedded default): the running local stack is used (``make
pipeline-run`` leaves it up with the predictor and its capture sink), the sink writes what it
holds, the monitor runs, and a retrain verdict runs the local pipeline on the serving model's
raw input plus an immutable snapshot of the labelled feedback. With ``KFP_HOST`` (the CronJob
on a cluster): the same monitor, and a run of the training pipeline on Kubeflow Pipelines.
The decision and its reasons are printed, logged, and tagged on the monitor's MLflow run.

Arguments not listed here go to the monitor (``python -m components.monitor --help``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import urllib.request
from pathlib import Path

from components.common.cli import run_stage
from components.common.logs import configure_logging
from components.common.settings import Settings

logger = logging.getLogger(__name__)
RETRAIN_TAG = "retrain_started_at"  # on the model version: when the monitor started a retrain


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="python -m pipelines.monitor", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--retrain", action=argparse.BooleanOptionalAction, default=True,
                   help="start the training pipeline on a retrain verdict")  # fmt: skip
    p.add_argument("--output-dir", default="",
                   help="monitor outputs (default: <state dir>/monitor/<time>/)")  # fmt: skip
    p.add_argument("--pipeline-param", action="append", default=[], metavar="KEY=VALUE",
                   help="a parameter of the retraining run (repeatable)")  # fmt: skip
    p.add_argument("--cooldown-hours", type=float, default=24.0,
                   help="no second retrain of the same version within this time")  # fmt: skip
    return p.parse_known_args(argv)


def _local_stack(settings: Settings) -> Settings | None:
    """Point clients at the running local stack and flush its capture sink; None if down."""
    from components.deploy.local import SINK
    from pipelines.stack import LocalStack

    info = LocalStack(settings=settings).status()
    if info is None:
        return None
    os.environ.update(info.client_env(settings))
    for name, service in info.services.items():
        if name.startswith("predictor-") and service.healthy():
            _wait_for_captures(service.url.split("/v1/")[0])
    sink = info.services.get(SINK)
    if sink and sink.healthy():
        request = urllib.request.Request(f"{sink.url}/flush", b"", method="POST")
        with urllib.request.urlopen(request, timeout=120) as r:  # noqa: S310 (loopback)
            logger.info("capture sink flushed: %s", json.loads(r.read()))
    return Settings.from_env()


def _wait_for_captures(base: str, timeout: float = 120.0) -> None:
    """Wait until the predictor has handed every answered inference to the sink.

    Its captures of low-confidence predictions wait for their top words, computed when the
    model is idle: a flush right after the traffic would miss them.
    """
    deadline = time.monotonic() + timeout
    pending = 0.0
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{base}/metrics", timeout=30) as r:  # noqa: S310 (loopback)
            pending = sum(float(line.split()[-1]) for line in r.read().decode().splitlines()
                          if line.startswith("review_classifier_captures_pending"))  # fmt: skip
        if not pending:
            return
        time.sleep(0.2)
    logger.warning("predictor at %s still holds %d captures after %.0f s", base, pending, timeout)


def retrain_args(result: dict, settings: Settings, params: list[str]) -> list[str]:
    """``pipelines.run`` arguments: the serving model's raw input plus labelled feedback."""
    from components.common.storage import S3Storage
    from components.monitor import feedback, layout

    storage = S3Storage(settings)
    stats = storage.get_json(result["reference"].rstrip("/") + "/stats.json")
    args = ["--input", stats["config"]["input"]]
    snapshot = feedback.snapshot_labelled(layout.labelled_uri(settings), storage)
    if snapshot:
        args += ["--param", f"feedback_uri={snapshot}"]
    for pair in params:
        args += ["--param", pair]
    return args


def _tag_decision(result: dict, decision: str) -> None:
    """The decision on the monitor's MLflow run; a started retrain also on the model version."""
    import mlflow

    client = mlflow.MlflowClient()
    if result.get("mlflow_run_id"):
        client.set_tag(result["mlflow_run_id"], "decision", decision)
    if decision.startswith("retrain started"):
        client.set_model_version_tag(result["model"], result["model_version"],
                                     RETRAIN_TAG, str(time.time()))  # fmt: skip


def recent_retrain(result: dict, cooldown_hours: float) -> float | None:
    """When a retrain of this version was started within the cooldown, else None.

    A scheduled monitor sees the same drift every hour until the new version serves; one
    retrain per version and cooldown is enough.
    """
    import mlflow

    version = mlflow.MlflowClient().get_model_version(result["model"], result["model_version"])
    started = float((version.tags or {}).get(RETRAIN_TAG, 0) or 0)
    return started if started and time.time() - started < cooldown_hours * 3600 else None


def main(argv: list[str] | None = None) -> int:
    args, monitor_argv = parse_args(argv)
    configure_logging()
    settings = Settings.from_env()
    if not settings.kfp_host:
        settings = _local_stack(settings)
        if settings is None:
            print("monitor: no local stack is running; run `make pipeline-run` first (it "
                  "serves a model and captures its traffic)", file=sys.stderr)  # fmt: skip
            return 1
    from components.monitor.job import parse_args as monitor_args
    from components.monitor.job import print_decision, run_monitor

    out = args.output_dir or str(
        Path(settings.local_state_dir) / "monitor" / time.strftime("%Y%m%dT%H%M%S")
    )
    cfg = monitor_args(["--output-dir", out, *monitor_argv])
    result = run_stage("monitor", lambda: run_monitor(cfg, settings))
    if result is None:
        return 1
    print_decision(result)
    if not result["verdict"]["retrain"]:
        decision = "no retrain"
    elif not args.retrain:
        decision = "retrain asked for; not started (--no-retrain)"
    elif started := recent_retrain(result, args.cooldown_hours):
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started))
        decision = f"retrain asked for; one was started at {when} (cooldown)"
    else:
        run_argv = retrain_args(result, settings, args.pipeline_param)
        decision = f"retrain started: python -m pipelines.run {' '.join(run_argv)}"
    print(f"Decision: {decision}")
    logger.info("decision: %s; reasons: %s", decision, "; ".join(result["verdict"]["reasons"]))
    _tag_decision(result, decision)
    if not decision.startswith("retrain started"):
        return 0
    from pipelines.run import main as run_pipeline

    return run_pipeline(run_argv)


if __name__ == "__main__":
    sys.exit(main())
