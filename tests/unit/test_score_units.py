"""Batch scoring's pure parts: model specs, length-sorted batches, the output frame, commit."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from components.common.errors import ConfigurationError
from components.score.job import ScoreConfig, commit
from components.score.model import parse_model_spec, resolve_model
from components.score.predict import predict_frame, to_output


class _LengthBackend:
    """A backend (tokenize/forward) whose probabilities encode each text's length."""

    labels = ["1", "2", "3", "4", "5"]
    pad_id = 0

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return [[1] * len(t) for t in texts]

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        lengths = attention_mask.sum(axis=1)
        self.batches.append(lengths.tolist())
        out = np.zeros((len(lengths), 5), dtype=np.float32)
        out[np.arange(len(lengths)), lengths % 5] = 1.0
        return out


def test_model_specs():
    assert parse_model_spec("models:/rc@champion") == ("rc", "champion", "")
    assert parse_model_spec("models:/rc/3") == ("rc", "", "3")
    assert parse_model_spec("models:/rc@champion", "12") == ("rc", "", "12")
    with pytest.raises(ConfigurationError, match="model_version 'x' is not a version number"):
        parse_model_spec("models:/rc@champion", "x")
    with pytest.raises(ConfigurationError, match="model_version needs a models:/ model"):
        resolve_model("s3://bucket/model/", "3")
    assert resolve_model("/some/dir").uri == "/some/dir"


def test_batches_are_sorted_by_length_and_results_come_back_in_input_order():
    texts = ["x" * n for n in (9, 1, 7, 3, 5, 2, 8)]
    backend = _LengthBackend()
    probs, labels = predict_frame(backend, texts, batch_size=3)
    # the predictor's buckets: length-sorted, at most 3 texts each
    assert sorted(n for b in backend.batches for n in b) == [1, 2, 3, 5, 7, 8, 9]
    assert all(b == sorted(b) and len(b) <= 3 for b in backend.batches)
    assert probs.argmax(axis=1).tolist() == [len(t) % 5 for t in texts]
    frame = pd.DataFrame({"review_id": [f"r{i}" for i in range(7)], "product_category": "Books"})
    out = to_output(frame, probs, labels, "rc", "4", "onnx-int8")
    assert out["star_rating"].tolist() == [len(t) % 5 + 1 for t in texts]
    assert out["probabilities"][0] == {"1": 0.0, "2": 0.0, "3": 0.0, "4": 0.0, "5": 1.0}
    assert (out["model_version"] == "4").all() and np.allclose(out["score"], 1.0)
    assert (out["variant"] == "onnx-int8").all()


def test_config_is_checked():
    with pytest.raises(ConfigurationError, match="input_format 'csv' is not one of"):
        ScoreConfig("in", "out", input_format="csv")
    with pytest.raises(ConfigurationError, match="output must differ from input"):
        ScoreConfig("s3://b/x/", "s3://b/x")


def test_local_commit_replaces_the_old_output_whole(tmp_path: Path):
    staged, final = tmp_path / "staged", tmp_path / "final"
    (staged / "predictions").mkdir(parents=True)
    (staged / "predictions" / "part-0.parquet").write_text("new")
    (staged / "_SUCCESS").write_text("{}")
    (final / "predictions").mkdir(parents=True)
    (final / "predictions" / "part-9.parquet").write_text("old")
    commit(staged, str(final), None)
    assert sorted(p.name for p in (final / "predictions").iterdir()) == ["part-0.parquet"]
    assert (final / "_SUCCESS").exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "final", "staged",
    ]  # fmt: skip


def test_precision_is_fp32_on_cpu_unless_bf16_is_asked_for():
    from components.common.inference import pick_dtype

    cpu = torch.device("cpu")
    assert pick_dtype(cpu) == torch.float32 and pick_dtype(cpu, "fp32") == torch.float32
    assert pick_dtype(cpu, "bf16") == torch.bfloat16
    with pytest.raises(
        ConfigurationError, match="precision 'int4' is not one of: auto, fp32, bf16"
    ):
        ScoreConfig("in", "out", precision="int4")


def test_an_explicit_precision_picks_the_variant_of_that_number_format(tmp_path, monkeypatch):
    import json

    from components.score.job import scoring_variant

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (tmp_path / "variants.json").write_text(json.dumps({"variants": {
        "torch-fp32": {"eligible": True}, "onnx-fp32": {"eligible": True},
        "onnx-int8": {"eligible": True, "verdict": "int8 verdict"}}}))  # fmt: skip
    local = str(tmp_path)
    assert scoring_variant(local, ScoreConfig("in", "out")).variant == "onnx-int8"
    assert scoring_variant(local, ScoreConfig("in", "out", precision="fp32")).variant == "onnx-fp32"
    assert (
        scoring_variant(local, ScoreConfig("in", "out", precision="bf16")).variant == "torch-bf16"
    )
    pinned = ScoreConfig("in", "out", precision="fp32", variant="onnx-int8")
    assert scoring_variant(local, pinned).variant == "onnx-int8"  # a pin wins
