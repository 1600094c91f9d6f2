"""The predictor over real HTTP and gRPC: V1, V2 (raw JSON, tritonclient HTTP and gRPC), bad
input, batching, back-pressure (503 with Retry-After), the ONNX Runtime backend."""

import asyncio
import re

import httpx
import numpy as np
import pytest

from components.common.inference import Classifier
from components.common.processes import free_port, process_alive
from components.deploy.checks import smoke_test
from components.deploy.local import start_local_predictor
from pipelines.stack import LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]
NAME = "rc"
GOOD = "Absolutely love it, simply perfect."
VERSION = "7"  # the registered version the predictor is told it serves
BAD = "A complete waste of money, it is garbage."


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    local = LocalStack(tmp_path_factory.mktemp("serve-state"))
    grpc_port = free_port()
    service = start_local_predictor(str(trained["model_dir"]), NAME, stack=local,
                                    max_batch_size=64, grpc_port=grpc_port,
                                    extra_args=("--model_version", VERSION))  # fmt: skip
    base = service.url.split("/v1/")[0]
    yield {"base": base, "url": service.url, "model_dir": trained["model_dir"], "pid": service.pid,
           "grpc": f"127.0.0.1:{grpc_port}"}  # fmt: skip
    local.down()
    assert not process_alive(service.pid)


def test_v1_predictions_follow_the_contract(server):
    r = httpx.post(server["url"], json={"instances": [GOOD, {"review_body": BAD}]}, timeout=30)
    assert r.status_code == 200
    good, bad = r.json()["predictions"]
    # the answer names what answered: the registered version and the served variant
    assert {k: r.json()[k] for k in ("model_version", "variant")} == {
        "model_version": VERSION, "variant": "torch-fp32"}  # fmt: skip
    for p in (good, bad):
        assert set(p) == {"star_rating", "label", "score", "probabilities"}
        assert set(p["probabilities"]) == {"1", "2", "3", "4", "5"}
        assert p["score"] == pytest.approx(max(p["probabilities"].values()))
        assert p["label"] == str(p["star_rating"])
    assert good["star_rating"] > bad["star_rating"]
    assert smoke_test(server["url"])["star_rating"] in range(1, 6)


def test_health_readiness_and_metadata(server):
    assert httpx.get(f"{server['base']}/v1/models/{NAME}").json() == {"name": NAME, "ready": True}
    assert httpx.get(f"{server['base']}/v2/health/ready").status_code == 200
    meta = httpx.get(f"{server['base']}/v2/models/{NAME}").json()
    assert meta["inputs"][0]["datatype"] == "BYTES"
    assert {o["name"] for o in meta["outputs"]} == {"star_rating", "probabilities"}


def test_v2_raw_json(server):
    body = {
        "inputs": [{"name": "review_body", "shape": [2], "datatype": "BYTES", "data": [GOOD, BAD]}]
    }
    r = httpx.post(f"{server['base']}/v2/models/{NAME}/infer", json=body, timeout=30)
    assert r.status_code == 200, r.text
    outputs = {o["name"]: o for o in r.json()["outputs"]}
    assert outputs["star_rating"]["datatype"] == "INT32" and outputs["star_rating"]["shape"] == [2]
    assert outputs["probabilities"]["datatype"] == "FP32" and outputs["probabilities"]["shape"] == [
        2,
        5,
    ]
    ratings = outputs["star_rating"]["data"]
    assert ratings[0] > ratings[1]
    assert r.json()["model_version"] == VERSION
    assert r.json()["parameters"] == {"variant": "torch-fp32"}
    # /metrics counts answered texts by version and variant
    metrics = httpx.get(f"{server['base']}/metrics").text
    labels = f'model_version="{VERSION}",variant="torch-fp32"'
    count = re.search(rf"^review_classifier_inferences_total{{{labels}}} (\S+)$", metrics, re.M)
    assert count and float(count.group(1)) >= 2


def test_local_starts_listen_on_loopback_only(server):
    """127.0.0.2 is this machine too: a server on all interfaces would answer there."""
    import socket

    http_port = int(server["base"].rsplit(":", 1)[1])
    grpc_port = int(server["grpc"].rsplit(":", 1)[1])
    for port in (http_port, grpc_port):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) == 0
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.2", port)) != 0, port


def test_v2_with_tritonclient(server):
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=server["base"].removeprefix("http://"))
    assert client.is_model_ready(NAME)
    tensor = triton.InferInput("review_body", [2], "BYTES")
    tensor.set_data_from_numpy(np.array([GOOD.encode(), BAD.encode()], dtype=object))
    result = client.infer(NAME, [tensor])
    ratings = result.as_numpy("star_rating")
    probs = result.as_numpy("probabilities")
    assert ratings.dtype == np.int32 and probs.dtype == np.float32 and probs.shape == (2, 5)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert ratings[0] > ratings[1]


# tritonclient.grpc and KServe register the same protobuf messages (inference.*): once this
# process has imported kserve (test collection does), tritonclient.grpc cannot load here, so the
# client runs in its own process, as a real client does.
GRPC_CLIENT = """
import json, sys
import numpy as np
import tritonclient.grpc as triton

address, name, good, bad = sys.argv[1:]
client = triton.InferenceServerClient(url=address)
out = {"ready": client.is_server_ready() and client.is_model_ready(name)}
tensor = triton.InferInput("review_body", [2], "BYTES")
tensor.set_data_from_numpy(np.array([good.encode(), bad.encode()], dtype=object))
result = client.infer(name, [tensor])
ratings, probs = result.as_numpy("star_rating"), result.as_numpy("probabilities")
response = result.get_response()
out["model_version"] = response.model_version
out["variant"] = response.parameters["variant"].string_param
out.update(ratings=ratings.tolist(), probs=probs.tolist(), dtypes=[str(ratings.dtype), str(probs.dtype)])
wrong = triton.InferInput("review_body", [1], "FP32")
wrong.set_data_from_numpy(np.array([1.0], dtype=np.float32))
try:
    client.infer(name, [wrong])
except triton.InferenceServerException as e:
    out["error"] = [e.status(), e.message()]
print(json.dumps(out))
"""


def test_v2_over_grpc_with_tritonclient(server):
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", GRPC_CLIENT, server["grpc"], NAME, GOOD, BAD],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["ready"] and out["dtypes"] == ["int32", "float32"]
    assert (out["model_version"], out["variant"]) == (VERSION, "torch-fp32")
    probs = np.array(out["probs"])
    assert probs.shape == (2, 5) and out["ratings"][0] > out["ratings"][1]
    # the same numbers as over HTTP
    http = httpx.post(server["url"], json={"instances": [GOOD, BAD]}, timeout=30).json()
    want = [[p["probabilities"][k] for k in "12345"] for p in http["predictions"]]
    np.testing.assert_allclose(probs, want, atol=1e-5)
    # a bad request is INVALID_ARGUMENT with the reason
    status, message = out["error"]
    assert status == "StatusCode.INVALID_ARGUMENT" and "expected BYTES" in message


V2 = "/v2/models/rc/infer"
V1 = "/v1/models/rc:predict"
BAD_REQUESTS = [
    ("invalid json", V1, b"{not json", "not valid JSON|Unrecognized request format"),
    ("not an object", V1, b"[1, 2]", "instances"),
    ("missing instances", V1, b'{"inputs": ["x"]}', 'missing "instances"'),
    ("instances not a list", V1, b'{"instances": "text"}', "must be a list"),
    ("empty instances", V1, b'{"instances": []}', "is empty"),
    ("number instead of text", V1, b'{"instances": [42]}', "expected a string"),
    ("object without review_body", V1, b'{"instances": [{"text": "x"}]}', "review_body"),
    ("empty string", V1, b'{"instances": ["   "]}', "empty"),
    ("text too long", V1, ('{"instances": ["' + "a" * 20_001 + '"]}').encode(), "limit is 20000"),
    ("too many instances", V1, ('{"instances": [' + ",".join(['"ok"'] * 257) + "]}").encode(),
     "limit is 256"),
    ("v2 wrong datatype", V2,
     b'{"inputs": [{"name": "review_body", "shape": [1], "datatype": "FP32", "data": [1.0]}]}',
     "expected BYTES"),
    ("v2 wrong shape", V2,
     b'{"inputs": [{"name": "review_body", "shape": [1, 2], "datatype": "BYTES", "data": ["a", "b"]}]}',
     r"expected \[N\] or \[N, 1\]"),
    ("v2 shape/data mismatch", V2,
     b'{"inputs": [{"name": "review_body", "shape": [3], "datatype": "BYTES", "data": ["a"]}]}',
     "review_body"),
    ("v2 two inputs", V2,
     b'{"inputs": [{"name": "a", "shape": [1], "datatype": "BYTES", "data": ["x"]},'
     b' {"name": "b", "shape": [1], "datatype": "BYTES", "data": ["y"]}]}',
     "exactly 1 input"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "path", "body", "reason"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS]
)
def test_bad_requests_get_a_4xx_naming_the_problem(server, case, path, body, reason):
    r = httpx.post(server["base"] + path, content=body, headers={"content-type": "application/json"},
                   timeout=30)  # fmt: skip
    assert 400 <= r.status_code < 500, (case, r.status_code, r.text)
    assert re.search(reason, r.json()["error"], re.IGNORECASE), (case, r.text)
    # and the server keeps answering
    ok = httpx.post(server["url"], json={"instances": [GOOD]}, timeout=30)
    assert ok.status_code == 200


def test_200_concurrent_requests_get_their_own_answers_in_shared_batches(server):
    texts = [f"{GOOD if i % 2 else BAD} Order number {i}." for i in range(200)]
    reference = Classifier(server["model_dir"])
    expected = [p.star_rating for p in reference.predict(texts)]

    async def run() -> list[int]:
        async with httpx.AsyncClient(timeout=60) as client:
            calls = [client.post(server["url"], json={"instances": [t]}) for t in texts]
            answers = await asyncio.gather(*calls)
        return [a.json()["predictions"][0]["star_rating"] for a in answers]

    before = _batch_stats(server["base"])
    assert asyncio.run(run()) == expected
    after = _batch_stats(server["base"])
    batches = after["count"] - before["count"]
    texts_served = after["sum"] - before["sum"]
    assert texts_served == 200
    assert batches < 200 and texts_served / batches > 1, (batches, texts_served)


def _batch_stats(base: str) -> dict:
    text = httpx.get(f"{base}/metrics").text
    out = {}
    for key in ("count", "sum"):
        match = re.search(rf"^review_classifier_batch_size_{key} (\S+)$", text, re.M)
        out[key] = float(match.group(1)) if match else 0.0
    assert "review_classifier_queue_seconds_bucket" in text
    return out


def test_onnx_backend_and_back_pressure_over_http(trained, tmp_path):
    """The ONNX Runtime backend with a queue of 4 texts: a burst of 128 clients sending 4 texts
    each (a request waits alone, the next is refused) gets 200s and 503s with Retry-After,
    nothing else, and the server keeps answering."""
    local = LocalStack(tmp_path / "state")
    service = start_local_predictor(str(trained["model_dir"]), "rc-onnx", stack=local,
                                    extra_args=("--backend", "onnx", "--max_queue", "4"))  # fmt: skip
    texts = [f"{GOOD if i % 2 else BAD} Order number {i}." for i in range(128)]
    reference = Classifier(trained["model_dir"])
    expected = reference.probabilities(texts).numpy()

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=128)) as c:
            calls = [c.post(service.url, json={"instances": [t] * 4}) for t in texts]
            return await asyncio.gather(*calls)

    try:
        answers = asyncio.run(burst())
        codes = [a.status_code for a in answers]
        assert set(codes) <= {200, 503}, codes
        assert codes.count(200) >= 1 and codes.count(503) >= 1, codes  # the first gets in
        for i, a in enumerate(answers):
            if a.status_code == 503:
                assert int(a.headers["retry-after"]) >= 1 and "overloaded" in a.json()["error"]
            else:
                for p in a.json()["predictions"]:
                    got = [p["probabilities"][k] for k in "12345"]
                    np.testing.assert_allclose(got, expected[i], atol=1e-4)
        assert process_alive(service.pid)
        ok = httpx.post(service.url, json={"instances": [GOOD]}, timeout=30)
        assert ok.status_code == 200
        rejected = re.search(r"^review_classifier_rejected_total (\S+)$",
                             httpx.get(service.url.split("/v1/")[0] + "/metrics").text, re.M)  # fmt: skip
        assert rejected and float(rejected.group(1)) == codes.count(503)
    finally:
        local.down()
