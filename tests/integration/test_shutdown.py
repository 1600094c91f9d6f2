"""SIGTERM under load: the predictor answers everything sent before the signal, resets nothing.

A real predictor process (``python -m components.serve``, a small random BERT) serves 32
clients, each on its own keep-alive connection, sending one request after another. It then
gets SIGTERM, as a pod does when Kubernetes stops it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from components.common.processes import free_port
from components.deploy.checks import model_ready
from tests.callers import KeepAliveCaller
from tests.models import tiny_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CLIENTS = 32
TEXT = "Works fine, arrived on time and the price was right."


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-bert")
    tiny_model(path)
    return path


def test_sigterm_under_keep_alive_load_answers_every_request_and_resets_none(model_dir, tmp_path):
    port = free_port()
    log = tmp_path / "predictor.log"
    argv = [sys.executable, "-m", "components.serve", "--model_name", "rc", "--model_dir",
            str(model_dir), "--http_port", str(port), "--grpc_port", str(free_port()),
            "--drain_seconds", "15"]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))  # noqa: S603
    try:
        deadline = time.monotonic() + 120
        while not model_ready(f"http://127.0.0.1:{port}/v1/models/rc"):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "predictor not ready in 120s"
            time.sleep(0.3)
        stop = threading.Event()
        clients = [KeepAliveCaller("127.0.0.1", port, "rc", TEXT, stop) for _ in range(CLIENTS)]
        for c in clients:
            c.start()
        time.sleep(3)  # every connection open and busy
        assert all(c.answered for c in clients), "not every client got answers before the signal"
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=40)
        stop.set()
        for c in clients:
            c.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    errors = [(round(t - signalled, 3), e) for c in clients for t, e in c.errors]
    before = [(t, s) for c in clients for t, s in c.answered if t < signalled]
    after = [(t, s) for c in clients for t, s in c.answered if t >= signalled]
    # every request, before the signal and on the open connections after it, was answered
    assert errors == [], f"{len(errors)} requests lost: {errors[:5]}\n{log.read_text()[-2000:]}"
    assert before and all(s == 200 for _, s in before + after)
    assert sum(len(c.sent) for c in clients) == len(before) + len(after)
    # and each connection ended with the server's Connection: close, then the process exited
    assert all(c.closed_by_server for c in clients)
    assert code == 0, log.read_text()[-2000:]
    assert "draining" in log.read_text()
