"""The embedded default's deployment: the predictor as a process on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import os
import sys
import urllib.request

from components.common.errors import PlatformError
from components.common.localstack import (
    LocalStack,
    Service,
    free_port,
    spawn,
    stop_process,
    wait_healthy,
)

logger = logging.getLogger(__name__)


def predict_url(base: str, name: str) -> str:
    return f"{base}/v1/models/{name}:predict"


def start_local_predictor(
    model_dir: str, name: str, stack: LocalStack | None = None, timeout: float = 180.0,
    max_batch_size: int = 32, max_batch_delay_ms: float = 5.0,
) -> Service:  # fmt: skip
    """Start ``python -m components.serve`` on a free port and wait until it is ready.

    The process is registered with the local stack, so ``make stack-down`` stops it.
    """
    stack = stack or LocalStack()
    http, grpc = free_port(), free_port()
    base = f"http://127.0.0.1:{http}"
    log = stack.state_dir / "logs" / f"predictor-{name}.log"
    argv = [sys.executable, "-m", "components.serve", "--model_name", name, "--model_dir",
            str(model_dir), "--http_port", str(http), "--grpc_port", str(grpc),
            "--max_batch_size", str(max_batch_size), "--max_batch_delay_ms",
            str(max_batch_delay_ms)]  # fmt: skip
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


def model_ready(url: str) -> bool:
    """KServe's V1 model endpoint says ``"ready": true`` once load() and warm-up finished."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 (loopback)
            return bool(json.loads(r.read()).get("ready"))
    except (OSError, ValueError):
        return False


def smoke_test(url: str, text: str = "Absolutely love it, simply perfect.") -> dict:
    """One V1 request; raises with the reason when the answer is not a prediction."""
    body = json.dumps({"instances": [text]}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:  # noqa: S310 (our URL)
            answer = json.loads(r.read())
    except OSError as e:
        raise PlatformError(f"smoke request to {url} failed: {e}") from e
    predictions = answer.get("predictions") if isinstance(answer, dict) else None
    if not predictions or "star_rating" not in predictions[0]:
        raise PlatformError(f"smoke request to {url} got no prediction: {answer}")
    return predictions[0]
