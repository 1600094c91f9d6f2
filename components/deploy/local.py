"""The embedded default's deployment: the predictor as a process on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import urllib.request
from pathlib import Path

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
SERVED_FROM = "served_from.json"  # beside the model files: which registered version they are


def predict_url(base: str, name: str) -> str:
    return f"{base}/v1/models/{name}:predict"


def start_local_predictor(
    model_dir: str, name: str, stack: LocalStack | None = None, timeout: float = 180.0,
    max_batch_size: int = 64, grpc_port: int | None = None, extra_args: tuple[str, ...] = (),
) -> Service:  # fmt: skip
    """Start ``python -m components.serve`` on a free port and wait until it is ready.

    ``grpc_port`` (default: a free one) is where it answers the Open Inference Protocol over
    gRPC; ``extra_args`` go to the predictor as they are (``--backend onnx``, ...). The process
    is registered with the local stack, so ``make stack-down`` stops it.
    """
    stack = stack or LocalStack()
    http, grpc = free_port(), grpc_port or free_port()
    base = f"http://127.0.0.1:{http}"
    log = stack.state_dir / "logs" / f"predictor-{name}.log"
    argv = [sys.executable, "-m", "components.serve", "--model_name", name, "--model_dir",
            str(model_dir), "--http_port", str(http), "--grpc_port", str(grpc),
            "--max_batch_size", str(max_batch_size), *extra_args]  # fmt: skip
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


def fetch_registered(storage_uri: str, name: str, version: str,
                     stack: LocalStack | None = None) -> Path:  # fmt: skip
    """The registered version's files, from its storageUri, into the state directory.

    What KServe's storage initializer reads on a cluster, here into
    ``<state dir>/models/<name>/<version>/``: the local predictor serves what the gate approved
    and the registry holds, not the training step's copy.
    """
    from components.common.storage import S3Storage

    stack = stack or LocalStack()
    dest = stack.state_dir / "models" / name / (version or "unregistered")
    if dest.exists():
        shutil.rmtree(dest)
    uri = storage_uri.rstrip("/") + "/"
    if not S3Storage().download_prefix(uri, dest):
        raise PlatformError(f"the registered model at {uri} holds no files")
    (dest / SERVED_FROM).write_text(json.dumps({"storage_uri": storage_uri, "version": version}))
    return dest


def model_ready(url: str) -> bool:
    """KServe's V1 model endpoint says ``"ready": true`` once load() and warm-up finished."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 (loopback)
            return bool(json.loads(r.read()).get("ready"))
    except (OSError, ValueError):
        return False


def v1_predict(url: str, texts: list[str], what: str = "smoke request") -> list[dict]:
    """One V1 request for ``texts``; raises with the reason unless each got a prediction."""
    body = json.dumps({"instances": texts}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:  # noqa: S310 (our URL)
            answer = json.loads(r.read())
    except OSError as e:
        raise PlatformError(f"{what} to {url} failed: {e}") from e
    predictions = answer.get("predictions") if isinstance(answer, dict) else None
    answered = isinstance(predictions, list) and len(predictions) == len(texts)
    if not answered or not all(isinstance(p, dict) and "star_rating" in p for p in predictions):
        raise PlatformError(f"{what} to {url} got no prediction: {str(answer)[:300]}")
    return predictions


def smoke_test(url: str, text: str = "Absolutely love it, simply perfect.") -> dict:
    """One V1 request; raises with the reason when the answer is not a prediction."""
    return v1_predict(url, [text])[0]


def held_set_check(url: str, held: list[dict], min_agreement: float = 0.9) -> dict:
    """Send the held-out reviews in one V1 request and compare the answers with the evaluation.

    Their labels must agree with the evaluated model's on at least ``min_agreement`` of them (a
    model that loads but answers wrongly fails here). Without a held set (an evaluation from
    before it existed), one smoke request.
    """
    if not held:
        return {"agreement": None, "prediction": smoke_test(url)}
    predictions = v1_predict(url, [row["text"] for row in held], "held-set request")
    same = sum(p.get("label") == row["label"] for p, row in zip(predictions, held, strict=True))
    agreement = same / len(held)
    if agreement < min_agreement:
        raise PlatformError(
            f"{url} agrees with the evaluated model on {same} of {len(held)} held-out reviews "
            f"({agreement:.0%} < {min_agreement:.0%}): it does not serve the approved model"
        )
    return {"agreement": agreement, "answered": len(held)}
