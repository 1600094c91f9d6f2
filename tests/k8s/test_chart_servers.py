"""The MLflow chart's server arguments, run by the real MLflow server: what the pod would do."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.k8s.conftest import helm_template


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


API = "/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"


def _get(port: int, host: str, path: str = API) -> tuple[int, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_mlflow_server_accepts_its_service_names_and_refuses_other_hosts(tmp_path):
    (deployment,) = [d for d in helm_template("charts/mlflow", None, "mlflow")
                     if d["kind"] == "Deployment"]  # fmt: skip
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    port = _free_port()
    # The pod's arguments, with local stand-ins for the pod-only parts (port, SQLite file on
    # the emptyDir, the S3 artifact bucket) and one worker for this 2-core machine.
    local = {
        "--host": "127.0.0.1", "--port": str(port),
        "--backend-store-uri": f"sqlite:///{tmp_path}/mlflow.db",
        "--artifacts-destination": str(tmp_path / "artifacts"),
    }  # fmt: skip
    args = []
    for arg in container["args"]:
        key = arg.split("=", 1)[0]
        args.append(f"{key}={local[key]}" if key in local else arg)
    assert "--serve-artifacts" in args and any(a.startswith("--allowed-hosts=") for a in args)
    mlflow = Path(sys.executable).with_name("mlflow")
    log = open(tmp_path / "mlflow.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(mlflow), *args, "--workers=1"], stdout=log,
                            stderr=subprocess.STDOUT, env={**os.environ, "HOME": str(tmp_path)})  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if _get(port, f"localhost:{port}", "/health")[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "mlflow.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.5)
        # what the pipeline's ConfigMap and the chart's test pod use, and a pod IP
        for host in ("mlflow.review-classifier.svc.cluster.local:5000", "mlflow:5000",
                     "10.42.0.17:5000"):  # fmt: skip
            status, body = _get(port, host)
            assert status == 200 and '"name": "Default"' in body.replace('":"', '": "'), host
        assert _get(port, "attacker.example.com")[0] == 403  # DNS-rebinding protection stays on
        assert _get(port, "attacker.example.com", "/health") == (200, "OK")  # probes always
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
