"""The charts' container arguments run by the real servers (MLflow, our predictor): what the pods do."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from components.common.errors import StackError
from components.common.processes import (
    Service,
    free_port,
    http_ok,
    spawn,
    stop_process,
    wait_healthy,
)
from tests.k8s.conftest import helm_template
from tests.models import tiny_model


@contextlib.contextmanager
def serving(argv: list[str], env: dict, log_path: Path, ready: Callable[[], bool]):
    """Run a server process until the block ends; fail with its log if it never gets ready."""

    def probe(_: str) -> bool:
        try:
            return ready()
        except OSError:  # not listening yet
            return False

    service = Service(argv[0], spawn(argv[0], argv, log_path, env), "", "", str(log_path))
    try:
        wait_healthy(service, 120, probe)
        yield service
    except StackError as e:
        pytest.fail(f"{e}:\n{log_path.read_text()[-3000:]}")
    finally:
        stop_process(service.pid)


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
    port = free_port()
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
    with serving([str(mlflow), *args, "--workers=1"], {**os.environ, "HOME": str(tmp_path)},
                 tmp_path / "mlflow.log",
                 lambda: _get(port, f"localhost:{port}", "/health")[0] == 200):  # fmt: skip
        # what the pipeline's ConfigMap and the chart's test pod use, and a pod IP
        for host in ("mlflow.review-classifier.svc.cluster.local:5000", "mlflow:5000",
                     "10.42.0.17:5000"):  # fmt: skip
            status, body = _get(port, host)
            assert status == 200 and '"name": "Default"' in body.replace('":"', '": "'), host
        assert _get(port, "attacker.example.com")[0] == 403  # DNS-rebinding protection stays on
        assert _get(port, "attacker.example.com", "/health") == (200, "OK")  # probes always


def _post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=60) as r:  # noqa: S310 (our predictor)
        return json.loads(r.read())


def test_predictor_runs_with_the_runtime_arguments_and_passes_the_helm_test(tmp_path):
    objs = {d["kind"]: d for d in helm_template("charts/review-classifier",
                                                "charts/review-classifier/ci/eks-values.yaml")}  # fmt: skip
    runtime, test_pod = objs["ServingRuntime"], objs["Pod"]
    name = objs["InferenceService"]["metadata"]["name"]
    model_dir = tmp_path / "mnt-models"
    tiny_model(model_dir)
    port = free_port()
    # The runtime's container, as KServe fills it in: {{.Name}} is the InferenceService's name
    # and the storage initializer has put the model at /mnt/models.
    container = runtime["spec"]["containers"][0]
    args = [a.replace("{{.Name}}", name).replace("/mnt/models", str(model_dir))
            .replace("--http_port=8080", f"--http_port={port}") for a in container["args"]]  # fmt: skip
    env = {**os.environ, **{e["name"]: e["value"] for e in container["env"]},
           "HOME": str(tmp_path)}  # fmt: skip
    ready = f"http://127.0.0.1:{port}/v1/models/{name}"
    with serving([sys.executable, "-m", "components.serve", *args], env,
                 tmp_path / "predictor.log",
                 lambda: http_ok(ready)):  # fmt: skip
        # the chart's `helm test` script, pointed at this predictor instead of the Service
        script = test_pod["spec"]["containers"][0]["command"][2]
        in_cluster = f"http://{name}-predictor.review-classifier.svc.cluster.local"
        assert in_cluster in script
        script = script.replace(in_cluster, f"http://127.0.0.1:{port}")
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert "star_rating" in done.stdout
        # KServe's explain verb on the same URL: the runtime's arguments leave it on
        explained = _post_json(f"{ready}:explain", {"instances": ["never arrived, waste"]})
        words = [w["word"] for w in explained["explanations"][0]["attributions"]]
        assert words == ["never", "arrived", ",", "waste"]
        assert explained["explained_with"] == explained["served_variant"]
