"""The remote path against a local HTTP server that answers the KFP v2beta1 REST calls.

The server is a real HTTP server (kfp.Client talks to it over the network); it records
what the runner sent so the test can check the spec, the parameters and the experiment.
"""

import json
import re
from email.parser import BytesParser
from email.policy import default
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import yaml

from components.common.settings import Settings
from pipelines.run import parse_args, run_remote

ROOT = Path(__file__).resolve().parents[2]


class FakeKfp(BaseHTTPRequestHandler):
    """Just enough of the KFP v2beta1 API for upload, version, experiment, run and status."""

    calls: list = []
    state: dict = {}

    def log_message(self, *args):
        pass

    def _reply(self, body: dict, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def _authorized(self) -> bool:
        """With ``state['token']``, every call needs that bearer token (as Kubeflow's auth does)."""
        token = FakeKfp.state.get("token")
        if token and self.headers.get("Authorization") != f"Bearer {token}":
            self._reply({"error": "Unauthenticated", "code": 16}, 401)
            return False
        return True

    def do_GET(self):
        FakeKfp.calls.append(("GET", self.path, None))
        if not self._authorized():
            return None
        path = self.path.split("?")[0]
        if path == "/apis/v2beta1/pipelines":
            existing = FakeKfp.state.get("pipeline_id")
            pipelines = (
                [{"pipeline_id": existing, "display_name": "review-classifier"}] if existing else []
            )
            return self._reply({"pipelines": pipelines, "total_size": len(pipelines)})
        if m := re.match(r"^/apis/v2beta1/pipelines/([^/]+)/versions$", path):
            return self._reply({"pipeline_versions": [{"pipeline_id": m.group(1),
                                                       "pipeline_version_id": "ver-1"}], "total_size": 1})  # fmt: skip
        if path == "/apis/v2beta1/experiments":
            return self._reply({"experiments": [], "total_size": 0})
        if m := re.match(r"^/apis/v2beta1/runs/([^/]+)$", path):
            return self._reply({"run_id": m.group(1), "state": FakeKfp.state.get("final", "SUCCEEDED"),
                                "display_name": "r"})  # fmt: skip
        if path.startswith("/apis/v2beta1/healthz"):
            return self._reply({"multi_user": bool(FakeKfp.state.get("token"))})
        return self._reply({"error": f"unexpected GET {path}"}, 404)

    def do_POST(self):
        body = self._body()
        FakeKfp.calls.append(("POST", self.path, body))
        if not self._authorized():
            return None
        path = self.path.split("?")[0]
        if path == "/apis/v2beta1/pipelines/upload":
            FakeKfp.state["uploaded"] = _multipart_file(self.headers, body)
            FakeKfp.state["pipeline_id"] = "pipe-1"
            return self._reply({"pipeline_id": "pipe-1", "display_name": "review-classifier"})
        if path == "/apis/v2beta1/pipelines/upload_version":
            FakeKfp.state["uploaded_version"] = _multipart_file(self.headers, body)
            return self._reply({"pipeline_id": "pipe-1", "pipeline_version_id": "ver-2"})
        if path == "/apis/v2beta1/experiments":
            FakeKfp.state["experiment"] = json.loads(body)
            return self._reply({"experiment_id": "exp-1", **json.loads(body)})
        if path == "/apis/v2beta1/runs":
            FakeKfp.state["run"] = json.loads(body)
            return self._reply({"run_id": "run-1", "state": "PENDING", **json.loads(body)})
        return self._reply({"error": f"unexpected POST {path}"}, 404)


def _multipart_file(headers, body: bytes) -> str:
    message = BytesParser(policy=default).parsebytes(
        f"Content-Type: {headers['Content-Type']}\r\n\r\n".encode() + body
    )
    for part in message.iter_parts():
        if part.get_filename():
            return (
                part.get_content()
                if isinstance(part.get_content(), str)
                else part.get_content().decode()
            )
    raise AssertionError("no file in the upload")


def _run(host: str, *argv: str, env: dict | None = None) -> int:
    settings = Settings.from_env({"KFP_HOST": host, **(env or {})}, dotenv=None)
    return run_remote(parse_args(list(argv)), settings)


def test_first_run_uploads_the_pipeline_and_creates_a_run(kfp_server, capsys):
    code = _run(kfp_server, "--param", "epochs=3", "--param", "min_accuracy=0.5",
                "--input", "s3://my-data/raw/", "--experiment", "nightly", "--run-name", "r1")  # fmt: skip
    assert code == 0
    uploaded = yaml.safe_load_all(FakeKfp.state["uploaded"])
    spec = next(uploaded)
    assert spec["pipelineInfo"]["name"] == "review-classifier"
    golden = next(yaml.safe_load_all((ROOT / "pipelines" / "review_classifier.yaml").read_text()))
    assert spec["root"] == golden["root"]
    assert FakeKfp.state["experiment"]["display_name"] == "nightly"
    run = FakeKfp.state["run"]
    assert run["display_name"] == "r1" and run["experiment_id"] == "exp-1"
    assert run["service_account"] == "review-classifier-pipeline"  # manifests/base's RBAC
    assert run["pipeline_version_reference"] == {
        "pipeline_id": "pipe-1",
        "pipeline_version_id": "ver-1",
    }
    assert run["runtime_config"]["parameters"] == {
        "epochs": 3,
        "min_accuracy": 0.5,
        "input_uri": "s3://my-data/raw/",
    }
    out = capsys.readouterr().out
    assert f"Run URL: {kfp_server}/#/runs/details/run-1" in out


def test_existing_pipeline_gets_a_new_version_and_wait_reports_failure(kfp_server, capsys):
    FakeKfp.state.update({"pipeline_id": "pipe-1", "final": "FAILED"})
    code = _run(kfp_server, "--wait", "--timeout", "30")
    assert code == 1
    assert "uploaded_version" in FakeKfp.state and "uploaded" not in FakeKfp.state
    assert FakeKfp.state["run"]["pipeline_version_reference"]["pipeline_version_id"] == "ver-2"
    assert "finished: FAILED" in capsys.readouterr().out


def test_unknown_parameter_is_refused_with_the_allowed_names(kfp_server):
    with pytest.raises(SystemExit, match="KEY one of"):
        _run(kfp_server, "--param", "epochz=3")


def test_an_unknown_serving_variant_is_refused_before_the_run(kfp_server):
    with pytest.raises(SystemExit, match="serving_variant=int4: expected one of auto, "):
        _run(kfp_server, "--param", "serving_variant=int4")
    assert "run" not in FakeKfp.state


def test_batch_score_is_compiled_uploaded_and_run_with_its_own_name(kfp_server, capsys):
    code = _run(kfp_server, "--pipeline", "batch-score", "--input", "s3://my-data/new/",
                "--output", "s3://my-data/scored/", "--param", "model_version=4")  # fmt: skip
    assert code == 0
    spec = next(yaml.safe_load_all(FakeKfp.state["uploaded"]))
    assert spec["pipelineInfo"]["name"] == "batch-score"
    run = FakeKfp.state["run"]
    assert run["display_name"].startswith("batch-score-")
    assert run["runtime_config"]["parameters"] == {
        "model_version": "4", "input_uri": "s3://my-data/new/", "output_uri": "s3://my-data/scored/",
    }  # fmt: skip
    with pytest.raises(SystemExit, match="batch-score needs --input and --output"):
        _run(kfp_server, "--pipeline", "batch-score", "--input", "s3://my-data/new/")


def test_multi_user_kubeflow_gets_the_token_and_the_namespace(kfp_server, capsys, monkeypatch):
    FakeKfp.state["token"] = "profile-token"
    with pytest.raises(SystemExit, match=r"answered 401 .*set KFP_TOKEN .*KFP_NAMESPACE"):
        _run(kfp_server, env={"KFP_NAMESPACE": "team-reviews"})
    FakeKfp.calls.clear()
    monkeypatch.setenv("KFP_TOKEN", "profile-token")
    assert _run(kfp_server, env={"KFP_NAMESPACE": "team-reviews"}) == 0
    assert FakeKfp.state["experiment"]["namespace"] == "team-reviews"
    uploads = [path for method, path, _ in FakeKfp.calls if "/pipelines/upload" in path]
    assert uploads and all("namespace=team-reviews" in path for path in uploads)
    listed = [path for method, path, _ in FakeKfp.calls
              if method == "GET" and path.startswith("/apis/v2beta1/pipelines?")]  # fmt: skip
    assert any("namespace=team-reviews" in path for path in listed)
    assert FakeKfp.state["run"]["experiment_id"] == "exp-1"


def test_a_service_account_token_file_is_used(kfp_server, tmp_path, monkeypatch):
    FakeKfp.state["token"] = "sa-token"
    token = tmp_path / "token"
    token.write_text("sa-token")
    monkeypatch.delenv("KFP_TOKEN", raising=False)
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))
    assert _run(kfp_server, env={"KFP_NAMESPACE": "team-reviews"}) == 0
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(SystemExit, match="no such token file"):
        _run(kfp_server)
