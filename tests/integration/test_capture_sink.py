"""The capture sink as a process: SIGKILLed mid-stream and restarted, nothing lost or doubled."""

import io
import os
import signal
import sys
import time

import httpx
import pandas as pd
import pytest

from components.common.processes import Service, free_port, spawn, stop_process, wait_healthy
from components.serve.payload_logger import PayloadLogger

pytestmark = pytest.mark.integration
INFERENCES = 400


def _start(port: int, spool, output: str, log) -> Service:
    argv = [sys.executable, "-m", "components.monitor.sink", "--host", "127.0.0.1", "--port",
            str(port), "--output", output, "--spool-dir", str(spool), "--flush-seconds", "0.5",
            "--instance", "test"]  # fmt: skip
    pid = spawn("sink", argv, log, dict(os.environ))
    service = Service("sink", pid, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/healthz",
                      str(log))  # fmt: skip
    wait_healthy(service, 60)
    return service


def test_sink_killed_mid_stream_loses_and_doubles_nothing(stack, storage, tmp_path):
    port, output = free_port(), "s3://review-classifier/test-capture/kill/"
    log = tmp_path / "sink.log"
    sink = _start(port, tmp_path / "spool", output, log)
    sender = PayloadLogger(f"http://127.0.0.1:{port}/", "review-classifier", "1")
    answer = {"predictions": [{"star_rating": 4, "label": "4", "score": 0.8,
                               "probabilities": {"4": 0.8, "5": 0.2}}]}  # fmt: skip
    for i in range(INFERENCES):
        sender.log(f"req-{i}", {"instances": [f"review number {i}"]}, answer)
    while sender.sent < INFERENCES:  # about half of the events acknowledged, some flushed
        time.sleep(0.01)
    os.killpg(sink.pid, signal.SIGKILL)
    stop_process(sink.pid)
    sent_before = sender.sent
    time.sleep(1.0)  # the sender keeps retrying while the sink is gone
    sink = _start(port, tmp_path / "spool", output, log)
    assert sender.drain(120), "the sender could not deliver every event after the restart"
    bad = httpx.post(f"{sink.url}/", content=b"{}", headers={"ce-id": "x", "ce-type": "other"})
    assert bad.status_code == 400 and "ce-type 'other' is not one of" in bad.json()["error"]
    flushed = httpx.post(f"{sink.url}/flush", timeout=60).json()
    stats = httpx.get(f"{sink.url}/stats", timeout=10).json()
    stop_process(sink.pid)
    objects = [o for o in storage.list_objects(output) if o.key.endswith(".parquet")]
    frames = [pd.read_parquet(io.BytesIO(storage.get_bytes(f"s3://review-classifier/{o.key}")))
              for o in objects]  # fmt: skip
    df = pd.concat(frames)
    assert sent_before < 2 * INFERENCES, "the sink was killed after the stream ended"
    assert sorted(df["request_id"]) == sorted(f"req-{i}" for i in range(INFERENCES)), flushed
    assert set(df["model_version"]) == {"1"} and (df["predicted_star"] == 4).all()
    # batches, not one object per request (each flush writes one object per version and hour)
    assert len(objects) < INFERENCES / 10
    assert all("/model_version=1/hour=" in o.key for o in objects)
    assert stats["dropped"].get("response_without_request", 0) == 0
