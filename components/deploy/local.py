"""The deploy step's local target: the predictor and its capture sink as local processes.

Both listen on 127.0.0.1 only, registered with the local stack's process record
(``components.common.localstate``), so ``make stack-down`` stops them. Development only: on a
cluster KServe runs the predictor.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path

from components.common.errors import PlatformError
from components.common.localstate import ProcessRegistry as LocalStack
from components.common.processes import Service, free_port, spawn, stop_process, wait_healthy
from components.deploy.checks import model_ready, predict_url

logger = logging.getLogger(__name__)
SERVED_FROM = "served_from.json"  # beside the model files: which registered version they are


def start_local_predictor(
    model_dir: str, name: str, stack: LocalStack | None = None, timeout: float = 180.0,
    max_batch_size: int = 64, grpc_port: int | None = None, extra_args: tuple[str, ...] = (),
    logger_url: str = "", variant: str = "",
) -> Service:  # fmt: skip
    """Start ``python -m components.serve`` on a free port of 127.0.0.1; wait until it is ready.

    ``grpc_port`` (default: a free one) is where it answers the Open Inference Protocol over
    gRPC; ``variant`` serves that variant (``auto``: the one the gate chose for a CPU);
    ``extra_args`` go to the predictor as they are (``--backend onnx``, ...). With
    ``logger_url`` every inference is sent to that capture sink (what KServe's logger does).
    The process is registered with the local stack, so ``make stack-down`` stops it.
    """
    stack = stack or LocalStack()
    http, grpc = free_port(), grpc_port or free_port()
    base = f"http://127.0.0.1:{http}"
    log = stack.state_dir / "logs" / f"predictor-{name}.log"
    argv = [sys.executable, "-m", "components.serve", "--model_name", name, "--model_dir",
            str(model_dir), "--http_port", str(http), "--grpc_port", str(grpc),
            "--max_batch_size", str(max_batch_size), "--bind_address", "127.0.0.1",
            *extra_args]  # fmt: skip
    if variant:
        argv += ["--variant", variant, "--target", "cpu"]
    if logger_url:
        argv += ["--logger_url", logger_url]
    pid = spawn(f"predictor {name}", argv, log, dict(os.environ))
    service = Service(f"predictor-{name}", pid, predict_url(base, name),
                      f"{base}/v1/models/{name}", str(log))  # fmt: skip
    try:
        wait_healthy(service, timeout, model_ready)
    except BaseException:
        stop_process(pid)
        raise
    stack.register(service)
    return service


SINK = "capture-sink"


def start_local_sink(stack: LocalStack | None = None, output: str = "",
                     flush_seconds: float = 15.0, timeout: float = 60.0) -> Service:  # fmt: skip
    """The capture sink beside the local predictor, reused while it runs.

    Its spool is ``<state dir>/capture-spool`` and it is registered with the local stack, so
    ``make stack-down`` stops it (a clean stop writes what is complete first).
    """
    from components.monitor.layout import capture_uri

    stack = stack or LocalStack()
    info = stack.read()
    running = info.services.get(SINK) if info else None
    if running and running.healthy():
        return running
    # a restarted sink takes its old port: running predictors keep sending to that URL
    port = int(running.url.rsplit(":", 1)[1]) if running else free_port()
    base = f"http://127.0.0.1:{port}"
    log = stack.state_dir / "logs" / f"{SINK}.log"
    argv = [sys.executable, "-m", "components.monitor.sink", "--host", "127.0.0.1",
            "--port", str(port), "--output", output or capture_uri(stack.settings),
            "--spool-dir", str(stack.state_dir / "capture-spool"),
            "--flush-seconds", str(flush_seconds), "--instance", "local"]  # fmt: skip
    pid = spawn(SINK, argv, log, dict(os.environ))
    service = Service(SINK, pid, base, f"{base}/healthz", str(log))
    try:
        wait_healthy(service, timeout)
    except BaseException:
        stop_process(pid)
        raise
    stack.register(service)
    return service


def fetch_registered(
    storage_uri: str, name: str, version: str, stack: LocalStack | None = None,
    variant: dict | None = None,
) -> Path:  # fmt: skip
    """The registered version's files, from its storageUri, into the state directory.

    What KServe's storage initializer reads on a cluster, here into
    ``<state dir>/models/<name>/<version>/``: the local predictor serves what the gate approved
    and the registry holds (with its variants), not the training step's copy. ``served_from.json``
    records the version and, given ``variant``, which variant serves and why.
    """
    from components.common.storage import S3Storage

    stack = stack or LocalStack()
    dest = stack.state_dir / "models" / name / (version or "unregistered")
    if dest.exists():
        shutil.rmtree(dest)
    uri = storage_uri.rstrip("/") + "/"
    if not S3Storage().download_prefix(uri, dest):
        raise PlatformError(f"the registered model at {uri} holds no files")
    served = {"storage_uri": storage_uri, "version": version, **(variant or {})}
    (dest / SERVED_FROM).write_text(json.dumps(served))
    return dest
