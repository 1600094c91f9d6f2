"""``POST /v1/models/<name>:explain`` over real HTTP: the answer, its bounds (4xx), back-pressure
(503 with Retry-After), predictions answered while explanations run, and the ONNX backend
explained on its fp32 PyTorch weights. The predictor serves a small random BERT."""

import asyncio

import httpx
import pytest

from components.common.processes import process_alive
from components.deploy.local import start_local_predictor
from pipelines.stack import LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]
NAME = "rc"
TEXT = "Stopped charging after two weeks; support never answered."


def _start(small_model, state, extra: tuple[str, ...]) -> tuple[str, int]:
    service = start_local_predictor(str(small_model), NAME, stack=state, extra_args=extra)
    return service.url.split("/v1/")[0], service.pid


@pytest.fixture(scope="module")
def predictors(small_model, tmp_path_factory):
    """The torch predictor (one explanation in flight at most, one integration step per chunk
    on the model's thread) and an ONNX one."""
    # one stack each: a stack keeps one predictor per model name
    states = [LocalStack(tmp_path_factory.mktemp("explain-state")) for _ in range(2)]
    extra = ("--explain_max_concurrent", "1", "--explain_chunk_tokens", "16")
    torch_base, torch_pid = _start(small_model, states[0], extra)
    onnx_base, onnx_pid = _start(small_model, states[1], ("--backend", "onnx"))
    yield {"torch": torch_base, "onnx": onnx_base}
    for state in states:
        state.down()
    assert not process_alive(torch_pid) and not process_alive(onnx_pid)


def _explain(base: str, body: object) -> httpx.Response:
    return httpx.post(f"{base}/v1/models/{NAME}:explain", json=body, timeout=60)


def test_explain_answers_the_prediction_and_word_attributions(predictors):
    base = predictors["torch"]
    r = _explain(base, {"instances": [TEXT, {"review_body": "Great&#34; cable<br />works"}],
                        "parameters": {"steps": 24}})  # fmt: skip
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["method"] == "integrated_gradients" and answer["steps"] == 24
    assert answer["served_variant"] == answer["explained_with"] == "torch-float32-cpu"
    assert answer["explained_on_served_variant"] is True
    predicted = httpx.post(f"{base}/v1/models/{NAME}:predict", json={"instances": [TEXT]},
                           timeout=30).json()["predictions"][0]  # fmt: skip
    first, second = answer["explanations"]
    assert first["star_rating"] == predicted["star_rating"]
    assert first["probabilities"] == pytest.approx(predicted["probabilities"], abs=1e-5)
    assert first["target"] == first["label"]  # toward the predicted class by default
    words = [w["word"] for w in first["attributions"]]
    assert words == ["Stopped", "charging", "after", "two", "weeks", ";", "support", "never",
                     "answered", "."]  # fmt: skip
    total = sum(w["attribution"] for w in first["attributions"])
    change = first["target_probability"] - first["baseline_probability"]
    assert total == pytest.approx(change, abs=0.05 * abs(change) + 1e-7)
    assert set(first["top_words"]) <= set(words)
    # the text is cleaned as for predictions: entities decoded, <br /> gone
    assert [w["word"] for w in second["attributions"]] == ["Great", '"', "cable", "works"]


def test_a_named_target_is_explained_instead_of_the_prediction(predictors):
    r = _explain(predictors["torch"], {"instances": [TEXT], "parameters": {"target": "5"}})
    assert r.status_code == 200, r.text
    assert r.json()["explanations"][0]["target"] == "5"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"instances": ["ok"] * 9}, "at most 8"),
        ({"instances": [TEXT], "parameters": {"steps": 65}}, "allowed: 1 to 64"),
        ({"instances": [TEXT], "parameters": {"steps": "many"}}, "must be an integer"),
        ({"instances": [TEXT], "parameters": {"target": "9"}}, "is not a label"),
        ({"instances": [TEXT], "parameters": {"method": "shap"}}, "unknown explain parameters"),
        ({"instances": [""]}, "empty"),
        ({"instances": ["x" * 20_001]}, "limit is 20000"),
        ({"text": TEXT}, 'missing "instances"'),
    ],
)
def test_requests_over_the_limits_get_a_4xx_naming_the_problem(predictors, body, reason):
    r = _explain(predictors["torch"], body)
    assert r.status_code == 400, r.text
    assert reason in r.json()["error"]
    assert _explain(
        predictors["torch"], {"instances": [TEXT], "parameters": {"steps": 2}}
    ).is_success


def test_invalid_json_is_a_400(predictors):
    r = httpx.post(f"{predictors['torch']}/v1/models/{NAME}:explain", content=b"{not json",
                   headers={"content-type": "application/json"}, timeout=30)  # fmt: skip
    assert r.status_code == 400, r.text


def _jobs_run(base: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("review_classifier_background_jobs_total"))  # fmt: skip


def test_explanations_beyond_the_limit_get_503_and_predictions_go_first(predictors):
    """One explanation in flight at most (--explain_max_concurrent 1): a second one meanwhile
    is refused with Retry-After; predictions sent while the first runs (512 one-step chunks)
    are all answered before it ends: they wait for at most one chunk each, not for it."""
    base = predictors["torch"]
    url = f"{base}/v1/models/{NAME}"
    long_body = {"instances": [TEXT] * 8, "parameters": {"steps": 64}}
    jobs_before = _jobs_run(base)

    async def run():
        async with httpx.AsyncClient(timeout=300) as client:
            first = asyncio.ensure_future(client.post(f"{url}:explain", json=long_body))
            while _jobs_run(base) == jobs_before:  # the first one is on the model
                await asyncio.sleep(0.05)
            second = await client.post(f"{url}:explain", json={"instances": [TEXT]})
            preds = await asyncio.gather(*(client.post(f"{url}:predict",
                                                       json={"instances": [f"{TEXT} {i}"]})
                                           for i in range(20)))  # fmt: skip
            running_after_predictions = not first.done()
            return await first, second, preds, running_after_predictions

    first, second, preds, running_after_predictions = asyncio.run(run())
    assert first.status_code == 200 and len(first.json()["explanations"]) == 8
    assert second.status_code == 503, second.text
    assert "explanations already wait" in second.text and int(second.headers["Retry-After"]) >= 1
    assert all(p.status_code == 200 for p in preds)
    assert running_after_predictions


def test_onnx_is_explained_on_its_fp32_pytorch_weights(predictors):
    body = {"instances": [TEXT], "parameters": {"target": "5"}}
    r = _explain(predictors["onnx"], body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["served_variant"] == "onnx"
    assert answer["explained_with"] == "torch-float32-cpu"
    assert answer["explained_on_served_variant"] is False
    # the same fp32 weights as the torch predictor: the same attributions
    torch_answer = _explain(predictors["torch"], body).json()
    ours, theirs = answer["explanations"][0], torch_answer["explanations"][0]
    assert [w["attribution"] for w in ours["attributions"]] == pytest.approx(
        [w["attribution"] for w in theirs["attributions"]], rel=1e-4, abs=1e-9
    )
