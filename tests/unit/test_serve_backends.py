"""The predictor's backends and HTTP plumbing, in process: ONNX Runtime against PyTorch, the
disconnect middleware, the 503 answer."""

import asyncio

import numpy as np
import pytest

from components.serve.batching import Overloaded, TokenBudgetBatcher

pytestmark = pytest.mark.slow  # 5 to 20 s (load): ONNX exports of a small BERT

REVIEWS = [
    "Great",
    "Stopped charging after two weeks, and support never answered my emails.",
    "The sound is fine for the price, though the left earbud falls out when I run.",
    "Five stars!!! &#34;Best cable ever&#34;<br />Would buy again.",
] * 3


def _probs(backend, texts):
    return TokenBudgetBatcher(backend.forward, backend.pad_id, max_batch_size=5).run_batch(
        backend.tokenize(texts)
    )


def test_onnx_runtime_agrees_with_pytorch(small_model):
    from components.serve.backends import make_backend

    reference = make_backend(small_model, "torch", device="cpu", precision="fp32")
    onnx = make_backend(small_model, "onnx")
    assert onnx.name == "onnx" and onnx.max_length == 32
    want, got = _probs(reference, REVIEWS), _probs(onnx, REVIEWS)
    assert got.shape == (len(REVIEWS), 5) and np.allclose(got.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(got, want, atol=1e-4)
    # and the bucketed, padded batch equals each review scored alone
    alone = np.concatenate([_probs(reference, [t]) for t in REVIEWS])
    np.testing.assert_allclose(want, alone, atol=1e-5)


def test_int8_onnx_stays_close_to_fp32(small_model):
    from components.serve.backends import make_backend

    reference = _probs(make_backend(small_model, "torch", device="cpu", precision="fp32"), REVIEWS)
    int8 = make_backend(small_model, "onnx-int8")
    assert int8.name == "onnx-int8" and int8.path.name == "int8.onnx"
    assert np.abs(_probs(int8, REVIEWS) - reference).max() < 0.05


def test_an_unknown_backend_is_a_load_error(small_model):
    from components.common.errors import ModelLoadError
    from components.serve.backends import make_backend

    with pytest.raises(ModelLoadError, match="unknown backend 'tensorrt'"):
        make_backend(small_model, "tensorrt")


def test_tokens_are_truncated_to_the_models_length(small_model):
    from components.serve.backends import make_backend

    backend = make_backend(small_model, "torch", device="cpu")
    ids = backend.tokenize(["word " * 500, "Great"])
    assert len(ids[0]) == 32 and len(ids[1]) == 3  # [CLS] great [SEP]


def _asgi_app(started: asyncio.Event, outcome: dict):
    async def app(scope, receive, send):
        await receive()  # the body
        started.set()
        try:
            await asyncio.sleep(30)  # waiting for its batch
        except asyncio.CancelledError:
            outcome["cancelled"] = True
            raise
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"late"})

    return app


def test_a_client_disconnect_cancels_the_waiting_handler():
    from components.serve.disconnect import CancelOnDisconnect

    async def run() -> dict:
        started, outcome, gone = asyncio.Event(), {}, asyncio.Event()
        sent: list = []

        async def receive():
            if not started.is_set():
                return {"type": "http.request", "body": b"{}", "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        middleware = CancelOnDisconnect(_asgi_app(started, outcome))
        task = asyncio.ensure_future(middleware({"type": "http", "path": "/v1"}, receive, send))
        await started.wait()
        gone.set()  # the client goes away while the request waits
        await asyncio.wait_for(task, 5)
        return {"cancelled": outcome.get("cancelled"), "sent": sent}

    result = asyncio.run(run())
    assert result == {"cancelled": True, "sent": []}


def test_overloaded_answers_503_with_retry_after():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from components.serve.disconnect import install

    app = FastAPI()

    @app.post("/infer")
    async def infer():
        raise Overloaded(512, 512, 3)

    @app.post("/ok")
    async def ok():
        return {"ok": True}

    install(app)
    client = TestClient(app)
    r = client.post("/infer")
    assert r.status_code == 503 and r.headers["retry-after"] == "3"
    assert "limit 512" in r.json()["error"]
    assert client.post("/ok").json() == {"ok": True}


def test_cuda_graph_shapes_cover_every_batch_the_batcher_forms(small_model):
    """The captured (batch, length) shapes: any batch up to the limit has one to replay in."""
    from components.serve.backends import TorchBackend, bucket_sizes, make_backend

    assert bucket_sizes(64) == [1, 2, 4, 8, 16, 32, 64]
    assert bucket_sizes(48) == [1, 2, 4, 8, 16, 32, 48]
    backend = make_backend(small_model, "torch", device="cpu")
    assert isinstance(backend, TorchBackend) and not backend.graphs  # no capture on a CPU
    shapes = backend._shapes(48)
    assert {n for _, n in shapes} == {16, 32}  # max_length 32, lengths padded to 16s
    for batch in range(1, 49):
        for length in range(1, 33):
            assert any(b >= batch and n >= length for b, n in shapes)


def test_the_predictor_cleans_text_as_ingest_did_before_tokenizing():
    """Training rows went through ingest's cleaning; a served review must get the same."""
    from components.common.text import clean_text
    from components.serve.model import ReviewClassifierModel

    class Recording:
        def tokenize(self, texts):
            self.seen = texts
            return texts

    model = ReviewClassifierModel("rc", "unused")
    model.backend = Recording()
    raw = ["Great &quot;value&quot;<br /><br />Works\x07 fine", "plain"]
    model._tokenize(raw)
    assert model.backend.seen == ['Great "value" Works fine', "plain"]
    assert model.backend.seen == [clean_text(t) for t in raw]


@pytest.mark.parametrize(
    ("env", "expected"),
    [({}, 20.0), ({"REVIEW_CLASSIFIER_DRAIN_SECONDS": "7.5"}, 7.5),
     ({"REVIEW_CLASSIFIER_DRAIN_SECONDS": "soon"}, "is not a number of seconds"),
     ({"REVIEW_CLASSIFIER_DRAIN_SECONDS": "0"}, "must be > 0 seconds")],
)  # fmt: skip
def test_drain_seconds_come_from_the_environment_the_inference_service_sets(env, expected):
    from components.common.errors import ConfigurationError
    from components.deploy.inferenceservice import DRAIN_ENV as SET_BY_DEPLOY
    from components.serve.drain import DRAIN_ENV, drain_seconds

    assert DRAIN_ENV == SET_BY_DEPLOY
    if isinstance(expected, float):
        assert drain_seconds(env) == expected
    else:
        with pytest.raises(ConfigurationError, match=expected):
            drain_seconds(env)
