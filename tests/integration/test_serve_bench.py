"""The serving benchmark end to end with a tiny model: what the GPU check's CPU dry run runs."""

import json
import subprocess
import sys

import pytest

from benchmarks.serve import BEST, HF, PREV

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # about 40 s


def test_the_benchmark_measures_every_server_grpc_and_overload(tmp_path, reviews_dir):
    argv = ["--size", "tiny", "--concurrency", "1", "4", "--requests", "16", "--reps", "1",
            "--overload", "100", "--servers", BEST, PREV, HF, "--output", "serve-test",
            "--output-dir", str(tmp_path)]  # fmt: skip
    # its own process: its gRPC client (tritonclient.grpc) cannot load beside kserve's protos
    proc = subprocess.run([sys.executable, "-m", "benchmarks.serve", *argv], capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "serve-test.json").read_text())
    assert (tmp_path / "serve-test.png").stat().st_size > 10_000
    detail = result["detail"]
    assert set(detail) == {BEST, PREV, HF, f"{BEST} over gRPC"}
    for per in detail.values():
        for c in ("1", "4"):
            assert per[c]["rps"] > 0 and per[c]["errors"] == 0
            assert per[c]["p50"] <= per[c]["p95"] <= per[c]["p99"]
            assert per[c]["tokens_per_s"] > per[c]["rps"]  # every review has several tokens
    rows = {(r["case"], r["metric"], r["baseline"]) for r in result["rows"]}
    assert ("concurrency=4", "req/s", PREV) in rows and ("concurrency=1", "p50 latency", HF) in rows
    over = result["overload"]
    assert over["clients"] == 100 and over["other"] == 0 and over["server_alive_after"]
    assert over["200"] + over["503"] == over["requests"]
    assert over["503"] == over["503 with Retry-After"]
    assert result["config"]["texts"].startswith("real")
