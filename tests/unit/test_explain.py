"""Integrated gradients, words, request bounds, the deletion check and the capture's top words,
in process on small BERTs (random, and one trained here on a task whose answer is known)."""

import asyncio

import numpy as np
import pytest
import torch

from components.common.errors import InvalidInput
from components.serve.explain import (
    ExplainLimits,
    IntegratedGradients,
    encode_words,
    explain_options,
    explain_texts,
    merge_words,
    top_words,
)

pytestmark = pytest.mark.slow  # about 25 s: a small BERT trained in the module, predictors loaded
LABELS = ["1", "2", "3", "4", "5"]


def test_explain_options_default_and_bounds():
    limits = ExplainLimits(max_instances=8, max_steps=64, default_steps=16)
    assert explain_options(None, LABELS, limits).steps == 16
    assert explain_options({"steps": 64, "target": 1}, LABELS, limits).target == "1"
    for bad, message in [
        ({"steps": 65}, "allowed: 1 to 64"),
        ({"steps": 0}, "allowed: 1 to 64"),
        ({"steps": "8"}, "must be an integer"),
        ({"steps": True}, "must be an integer"),
        ({"target": "6"}, "is not a label"),
        ({"baseline": "zeros"}, "unknown explain parameters"),
        (["steps"], "must be an object"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            explain_options(bad, LABELS, limits)


@pytest.fixture(scope="module")
def tokenizer(bert_vocab_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(bert_vocab_dir))


def test_word_pieces_merge_into_the_words_of_the_text(tokenizer):
    text = "Wireless earbuds stopped charging!"
    enc = encode_words(tokenizer, text, 64)
    assert not enc.truncated
    assert len(enc.input_ids) > 6  # earbuds is several pieces
    words = merge_words(enc, np.ones(len(enc.input_ids)))
    assert [w["word"] for w in words] == ["Wireless", "earbuds", "stopped", "charging", "!"]
    pieces = {w["word"]: w["attribution"] for w in words}
    assert pieces["earbuds"] == len(tokenizer.tokenize("earbuds"))  # summed, specials left out
    long = encode_words(tokenizer, "word " * 100, 16)
    assert long.truncated and len(long.input_ids) == 16
    assert top_words([{"word": "a", "attribution": -1.0}, {"word": "b", "attribution": 0.5},
                      {"word": "c", "attribution": 2.0}, {"word": ")", "attribution": 3.0},
                      {"word": "4G", "attribution": 0.1}]) == ["c", "b", "4G"]  # fmt: skip


def test_attributions_add_up_to_the_probability_change(small_model):
    from components.common.inference import Classifier

    clf = Classifier(small_model, device="cpu", precision="fp32")
    ig = IntegratedGradients(clf.model, clf.tokenizer, max_batch_tokens=64)
    enc = encode_words(clf.tokenizer, "Stopped charging after two weeks, what a waste.", 32)
    coarse, fine = (ig.attribute(enc.input_ids, 0, steps) for steps in (2, 32))
    assert len(fine.chunks) > 1  # 64 positions per chunk: 4 steps of 14 tokens each
    change = fine.probability - fine.baseline_probability
    assert change != 0
    assert abs(fine.completeness_gap) < 0.02 * abs(change)
    assert abs(fine.completeness_gap) <= abs(coarse.completeness_gap)
    # the chunked path and one chunk give the same numbers
    whole = IntegratedGradients(clf.model, clf.tokenizer).attribute(enc.input_ids, 0, 32)
    np.testing.assert_allclose(whole.token_scores, fine.token_scores, rtol=1e-4, atol=1e-9)


# ---- a small BERT trained on reviews whose deciding word is known ---------------------------
POSITIVE = ["excellent", "wonderful", "perfect", "fantastic", "superb"]
NEGATIVE = ["terrible", "awful", "broken", "useless", "horrible"]
FILLER = ["the", "cable", "arrived", "on", "time", "and", "my", "son", "uses", "it", "daily",
          "with", "his", "laptop", "at", "home", "box", "was", "blue"]  # fmt: skip


def _synthetic(n: int, seed: int) -> tuple[list[str], list[int]]:
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        positive = bool(rng.integers(2))
        words = list(rng.choice(FILLER, size=int(rng.integers(6, 12))))
        words.insert(
            int(rng.integers(len(words) + 1)), rng.choice(POSITIVE if positive else NEGATIVE)
        )
        texts.append(" ".join(words))
        labels.append(4 if positive else 0)
    return texts, labels


@pytest.fixture(scope="module")
def trained_small(tokenizer):
    from components.common.schema import label_map_for
    from components.train.model import build_small_bert

    torch.manual_seed(0)
    model = build_small_bert(len(tokenizer), 2, 64, 2, label_map_for("star_rating"),
                             pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    texts, labels = _synthetic(512, seed=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for step in range(120):
        i = (step * 32) % len(texts)
        batch = tokenizer(texts[i : i + 32], padding=True, return_tensors="pt")
        loss = model(**batch, labels=torch.tensor(labels[i : i + 32])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


def test_the_deciding_word_is_the_top_word_and_deleting_it_beats_random(tokenizer, trained_small):
    from benchmarks.explain import deletion_drops

    texts, labels = _synthetic(40, seed=7)
    with torch.no_grad():
        enc = tokenizer(texts, padding=True, return_tensors="pt")
        predicted = trained_small(**enc).logits.argmax(-1).tolist()
    assert np.mean(np.asarray(predicted) == np.asarray(labels)) > 0.9  # the model learnt it

    def predict(batch: list[str]) -> np.ndarray:
        with torch.no_grad():
            encoded = tokenizer(batch, padding=True, return_tensors="pt")
            return torch.softmax(trained_small(**encoded).logits, -1).numpy()

    ig = IntegratedGradients(trained_small, tokenizer)
    words = explain_texts(ig, texts, predicted, 16, 64)
    deciding = set(POSITIVE + NEGATIVE)
    assert np.mean([top_words(w, 1)[0] in deciding for w in words]) > 0.8
    encoded = [encode_words(tokenizer, t, 64) for t in texts]
    spans = [sorted({s for s in e.word_spans if s is not None}) for e in encoded]
    drops = deletion_drops(predict, texts, predicted, [[w["attribution"] for w in ws]
                                                       for ws in words], spans, (1,), draws=3)  # fmt: skip
    top, rand = np.asarray(drops[1]["top"]), np.asarray(drops[1]["random"])
    assert drops[1]["reviews"] >= 30
    assert top.mean() > rand.mean() + 0.2
    assert (top > rand).mean() > 0.8


# ---- the predictor in process: the capture's top words -------------------------------------
class _Recorder:
    def __init__(self) -> None:
        self.logged: list[tuple[str, dict, dict]] = []

    def log(self, event_id: str, request: dict, response: dict) -> None:
        self.logged.append((event_id, request, response))


def _predict_and_drain(small_model, capture_below: float) -> tuple[dict, _Recorder, list[int]]:
    from components.serve.explainer import ExplainConfig
    from components.serve.model import ReviewClassifierModel

    recorder = _Recorder()
    model = ReviewClassifierModel("rc", str(small_model), device="cpu", payload_logger=recorder,
                                  explain=ExplainConfig(capture_below=capture_below))  # fmt: skip
    model.load()

    pending = []  # what make monitor waits for before flushing the sink: before, after

    async def run() -> dict:
        body = {"instances": ["Great cable.", "It broke after a day."]}
        answer = await model.predict(await model.preprocess(body), {"x-request-id": "r1"})
        pending.append(model._captures_pending())
        await asyncio.gather(*model._enriching)
        pending.append(model._captures_pending())
        return answer

    return asyncio.run(run()), recorder, pending


def test_low_confidence_captures_carry_top_words_and_the_answer_does_not_wait(small_model):
    # a random 5-class model is never confident: every prediction is below 0.9
    answer, recorder, pending = _predict_and_drain(small_model, capture_below=0.9)
    assert all("top_words" not in p for p in answer["predictions"])
    assert pending == [1, 0]
    ((event_id, request, logged),) = recorder.logged
    assert event_id == "r1" and request == {"instances": ["Great cable.", "It broke after a day."]}
    for p, words in zip(logged["predictions"], (["Great", "cable", "."],
                                                ["It", "broke", "after", "a", "day", "."]),
                        strict=True):  # fmt: skip
        assert p["top_words"] and set(p["top_words"]) <= set(words)
    answer, recorder, pending = _predict_and_drain(small_model, capture_below=0.0)
    assert all("top_words" not in p for p in recorder.logged[0][2]["predictions"])
    assert pending == [0, 0]
