"""A real local stack (moto S3 server + MLflow server) shared by the integration tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.common.settings import Settings
from components.common.storage import S3Storage
from pipelines.stack import LocalStack, StackInfo


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Iterator[StackInfo]:
    """Start the stack once per session in a private state dir; point clients at it."""
    local = LocalStack(tmp_path_factory.mktemp("stack"), Settings.from_env({}, dotenv=None))
    # the test cluster's pods reach MLflow by its Service name, as the chart's --allowed-hosts
    # lets them (tests/integration/test_cluster.py); the rest of the tests by 127.0.0.1
    hosts = (
        "localhost,localhost:*,127.0.0.1,127.0.0.1:*,mlflow.review-classifier.svc.cluster.local:*"
    )
    saved_hosts = os.environ.get("MLFLOW_SERVER_ALLOWED_HOSTS")
    os.environ["MLFLOW_SERVER_ALLOWED_HOSTS"] = hosts
    try:
        info = local.up()
    finally:
        if saved_hosts is None:
            os.environ.pop("MLFLOW_SERVER_ALLOWED_HOSTS", None)
        else:
            os.environ["MLFLOW_SERVER_ALLOWED_HOSTS"] = saved_hosts
    env = info.client_env(local.settings)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield info
    finally:
        local.down()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def settings(stack: StackInfo) -> Settings:
    return Settings.from_env(dotenv=None)


@pytest.fixture(scope="session")
def storage(settings: Settings) -> S3Storage:
    return S3Storage(settings)


@pytest.fixture(scope="session")
def splits(tmp_path_factory) -> tuple[Path, float]:
    """Ingested splits of generated reviews, and the generator's accuracy ceiling."""
    from components.ingest.config import IngestConfig
    from components.ingest.job import run_ingest
    from pipelines.generate import GeneratorConfig, generate

    raw = tmp_path_factory.mktemp("raw")
    manifest = generate(GeneratorConfig(rows=24_000, seed=3), raw)
    out = tmp_path_factory.mktemp("splits")
    run_ingest(IngestConfig(input=str(raw), output=str(out)))
    return out, manifest.max_accuracy


def run_training(nproc: int, args: list[str], tmp: Path, max_restarts: int = 0):
    """Start torchrun with our trainer; its output goes to a log file beside ``tmp``."""
    import subprocess

    from components.train.launch import torchrun_argv

    argv = torchrun_argv(nproc, args, max_restarts=max_restarts)
    log = tmp / f"torchrun-{nproc}-{len(list(tmp.glob('torchrun-*')))}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
    proc.log_path = log
    return proc


def finish(proc, timeout: float = 600) -> None:
    code = proc.wait(timeout=timeout)
    assert code == 0, proc.log_path.read_text()[-4000:]


# A small BERT from scratch: the packaged pretrained encoder is for the pipeline and benchmarks.
FAST_TRAIN = ["--model-name-or-path", "scratch", "--batch-size", "32", "--learning-rate", "1e-3", "--log-every", "10",
              "--warmup-ratio", "0.05"]  # fmt: skip


@pytest.fixture(scope="session")
def trained(splits, stack, tmp_path_factory) -> dict:
    """One small model trained on the splits, logged to MLflow (shared by later stages)."""
    import json

    data, ceiling = splits
    tmp = tmp_path_factory.mktemp("trained")
    args = ["--data", str(data), "--output-dir", str(tmp / "model"), "--run-id", "shared",
            "--checkpoint-uri", str(tmp / "ckpt"), "--max-steps", "150",
            "--experiment", "integration", *FAST_TRAIN]  # fmt: skip
    finish(run_training(1, args, tmp))
    results = json.loads((tmp / "model" / "results.json").read_text())
    return {"model_dir": tmp / "model", "results": results, "data": data, "ceiling": ceiling}
