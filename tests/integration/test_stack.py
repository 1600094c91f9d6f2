import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from components.common.processes import group_alive, http_ok, process_alive
from components.common.storage import MiB, S3Storage

pytestmark = pytest.mark.integration


def _cli(state_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LOCAL_STATE_DIR": str(state_dir)}
    return subprocess.run(
        [sys.executable, "-m", "pipelines.stack", *args],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_stack_up_reuse_and_down_leaves_no_process(tmp_path):
    first = _cli(tmp_path, "up")
    assert first.returncode == 0, first.stderr
    assert "S3 endpoint:   http://127.0.0.1:" in first.stdout
    assert "MLflow UI:     http://127.0.0.1:" in first.stdout
    state = json.loads((tmp_path / "stack.json").read_text())
    pids = {name: svc["pid"] for name, svc in state["services"].items()}
    assert set(pids) == {"s3", "mlflow"}
    assert all(process_alive(pid) for pid in pids.values())
    assert http_ok(state["services"]["mlflow"]["url"] + "/health")
    try:
        second = _cli(tmp_path, "up")
        assert second.returncode == 0, second.stderr
        assert "reusing the running local stack" in second.stderr
        again = json.loads((tmp_path / "stack.json").read_text())
        assert {n: s["pid"] for n, s in again["services"].items()} == pids
    finally:
        down = _cli(tmp_path, "down")
    assert down.returncode == 0, down.stderr
    assert not any(process_alive(pid) for pid in pids.values())
    # whole process groups are gone too (MLflow's server workers); zombies count as gone
    assert not any(group_alive(pid) for pid in pids.values())
    assert not (tmp_path / "stack.json").exists()
    assert _cli(tmp_path, "status").returncode == 1


def test_s3_round_trip_with_multipart_and_prefix_download(stack, settings, tmp_path):
    storage = S3Storage(settings, multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    big = tmp_path / "up" / "big.bin"
    big.parent.mkdir()
    big.write_bytes(os.urandom(12 * MiB))
    (tmp_path / "up" / "nested").mkdir()
    (tmp_path / "up" / "nested" / "small.txt").write_text("hello")
    prefix = f"s3://{settings.data_bucket}/tests/roundtrip/"
    uploaded = storage.upload_dir(tmp_path / "up", prefix)
    assert sorted(uploaded) == [prefix + "big.bin", prefix + "nested/small.txt"]
    listed = {o.key: o for o in storage.list_objects(prefix)}
    assert listed["tests/roundtrip/big.bin"].size == 12 * MiB
    # a multipart upload's ETag is "<md5 of part md5s>-<number of parts>"
    assert listed["tests/roundtrip/big.bin"].etag.endswith("-3")
    assert "-" not in listed["tests/roundtrip/nested/small.txt"].etag
    paths = storage.download_prefix(prefix, tmp_path / "down")
    assert sorted(p.relative_to(tmp_path / "down").as_posix() for p in paths) == [
        "big.bin",
        "nested/small.txt",
    ]
    assert (tmp_path / "down" / "big.bin").read_bytes() == big.read_bytes()
    storage.put_json(prefix + "x.json", {"a": 1})
    assert storage.get_json(prefix + "x.json") == {"a": 1}
    assert storage.exists(prefix + "x.json") and not storage.exists(prefix + "missing")
    assert storage.delete_prefix(prefix) == 3
    assert storage.list_objects(prefix) == []


def test_mlflow_run_artifact_lands_in_local_s3(stack, settings, storage, tmp_path):
    mlflow.set_tracking_uri(stack.mlflow_uri)
    mlflow.set_experiment("stack-test")
    note = tmp_path / "note.txt"
    note.write_text("artifact body")
    with mlflow.start_run() as run:
        mlflow.log_params({"lr": 1e-5, "batch": 128})
        mlflow.log_metric("accuracy", 0.5, step=1)
        mlflow.log_artifact(str(note))
    fetched = mlflow.get_run(run.info.run_id)
    assert fetched.data.params == {"lr": "1e-05", "batch": "128"}
    assert fetched.data.metrics["accuracy"] == 0.5
    keys = [o.key for o in storage.list_objects(f"s3://{settings.mlflow_artifact_bucket}/")]
    matching = [k for k in keys if run.info.run_id in k and k.endswith("note.txt")]
    assert len(matching) == 1, keys
    body = storage.get_bytes(f"s3://{settings.mlflow_artifact_bucket}/{matching[0]}")
    assert body == b"artifact body"


@pytest.mark.slow
def test_ctrl_c_during_start_up_leaves_nothing_behind(tmp_path):
    import signal
    import time

    env = {**os.environ, "LOCAL_STATE_DIR": str(tmp_path)}
    # As from a terminal: a runner started in the background (nohup ... &) passes SIGINT on
    # ignored, and Python then never raises KeyboardInterrupt.
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.stack", "up"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    state = tmp_path / "stack.json"
    pids: dict = {}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if state.exists():
            services = json.loads(state.read_text())["services"]
            if "mlflow" in services:  # the S3 server is up and MLflow is starting
                pids = {name: svc["pid"] for name, svc in services.items()}
                break
        time.sleep(0.05)
    assert pids, "the stack never got to starting MLflow"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err
    assert not any(process_alive(pid) or group_alive(pid) for pid in pids.values())
    assert not state.exists()


@pytest.mark.slow
def test_s3_objects_survive_a_killed_server(tmp_path):
    """A restarted stack finds every object a client was told was written (kill -9 included)."""
    import signal

    from components.common.settings import Settings
    from pipelines.stack import LocalStack

    stack = LocalStack(tmp_path, Settings.from_env({}, dotenv=None))
    info = stack.up()
    env = info.client_env(stack.settings)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        settings = Settings.from_env(dotenv=None)
        storage = S3Storage(settings)
        bucket = settings.data_bucket
        big = os.urandom(12 * MiB)  # multipart (threshold 8 MiB)
        (tmp_path / "big.bin").write_bytes(big)
        storage.upload_file(tmp_path / "big.bin", f"s3://{bucket}/a/big.bin")
        storage.put_bytes(f"s3://{bucket}/a", b"a key that is a prefix of others")
        storage.put_bytes(f"s3://{bucket}/a/gone.txt", b"deleted before the kill")
        storage.delete_prefix(f"s3://{bucket}/a/gone")
        storage.put_bytes(f"s3://{bucket}/a/small.txt", b"first")
        storage.put_bytes(f"s3://{bucket}/a/small.txt", b"second")  # overwritten
        os.kill(info.services["s3"].pid, signal.SIGKILL)
        stack.down()
        info = stack.up()
        os.environ.update(info.client_env(stack.settings))
        storage = S3Storage(Settings.from_env(dotenv=None))
        keys = sorted(o.key for o in storage.list_objects(f"s3://{bucket}/a"))
        assert keys == ["a", "a/big.bin", "a/small.txt"]
        assert storage.get_bytes(f"s3://{bucket}/a/big.bin") == big
        assert storage.get_bytes(f"s3://{bucket}/a/small.txt") == b"second"
        assert storage.get_bytes(f"s3://{bucket}/a") == b"a key that is a prefix of others"
    finally:
        stack.down()
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
