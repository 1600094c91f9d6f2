"""Serving variants: built and judged against fp32 on the same rows, chosen, verified at load."""

import csv
import json
import shutil

import numpy as np
import pytest

from components.common.errors import ModelLoadError
from components.serve.variants import (
    Choice,
    choose_variant,
    load_variant,
    predict_texts,
    variant_file,
)  # fmt: skip

ROWS = 80


def _record(**eligible: bool) -> dict:
    variants = {"torch-fp32": {"eligible": True, "verdict": "the reference"}}
    for name, ok in eligible.items():
        variants[name.replace("_", "-")] = {"eligible": ok, "verdict": f"{name} verdict"}
    return {"variants": variants}


def test_the_fastest_eligible_variant_is_chosen_per_target():
    both = _record(onnx_int8=True, onnx_fp32=True, torch_bf16=True)
    assert choose_variant(both, "cpu").variant == "onnx-int8"
    assert choose_variant(both, "gpu").variant == "torch-bf16"
    int8_refused = choose_variant(_record(onnx_int8=False, onnx_fp32=True), "cpu")
    assert int8_refused.variant == "onnx-fp32"
    assert "passed over: onnx-int8 (onnx_int8 verdict)" in int8_refused.reason
    assert choose_variant(_record(onnx_int8=False, onnx_fp32=False), "cpu").variant == "torch-fp32"
    assert choose_variant(None, "gpu") == Choice(
        "torch-fp32", "no variants recorded for this model: the reference"
    )
    pinned = choose_variant(_record(onnx_int8=False), "cpu", "onnx-int8")
    assert pinned == Choice("onnx-int8", "pinned by serving_variant (REFUSED by the gate)")
    with pytest.raises(ModelLoadError, match="variant 'int4' is not one of"):
        choose_variant(None, "cpu", "int4")


@pytest.fixture(scope="module")
def texts(reviews_dir) -> list[str]:
    path = reviews_dir / "amazon_reviews_us_Electronics_v1_00.sample.tsv"
    with open(path, encoding="utf-8", newline="") as f:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        bodies = [r["review_body"] for r in rows if len(r["review_body"] or "") > 40]
    return bodies[:ROWS]


@pytest.mark.slow  # about 10 s: two ONNX exports and int8 quantizations of a small BERT
def test_variants_are_judged_on_the_same_rows_and_a_degraded_int8_is_refused(
    small_model, texts, tmp_path
):
    import torch
    from transformers import AutoModelForSequenceClassification

    from components.evaluate.variants import VariantConfig, build_variant_files, record_variants

    model_dir = tmp_path / "model"
    shutil.copytree(small_model, model_dir)
    reference = predict_texts(load_variant(model_dir, "torch-fp32"), texts)
    # labels the fp32 model gets right by construction: any variant's loss shows at once
    y = reference.argmax(axis=1)
    # a deliberately degraded int8: quantized from noised weights, put where int8 belongs
    noised = tmp_path / "noised"
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * p.std().clamp(min=1e-3))
    model.save_pretrained(noised)
    for name in ("tokenizer.json", "tokenizer_config.json", "label_map.json"):
        if (model_dir / name).exists():
            shutil.copy(model_dir / name, noised / name)
    build_variant_files(model_dir, ("onnx-fp32",))
    degraded = build_variant_files(noised, ("onnx-int8",))["onnx-int8"]
    shutil.copy(degraded, variant_file(model_dir, "onnx-int8"))
    from components.evaluate.variants import evaluate_variants

    cfg = VariantConfig(bf16=False)
    record = evaluate_variants(model_dir, texts, y, reference, 5, cfg, build=False)
    v = record["variants"]
    assert set(v) == {"torch-fp32", "onnx-fp32", "onnx-int8"} and record["rows"] == ROWS
    assert v["onnx-fp32"]["agreement_with_fp32"] == 1.0 and v["onnx-fp32"]["eligible"]
    assert v["onnx-int8"]["agreement_with_fp32"] < 0.9 and not v["onnx-int8"]["eligible"]
    low = v["onnx-int8"]["accuracy_vs_fp32"]["low"]
    assert low < -cfg.tolerance and "reaches below -0.0050" in v["onnx-int8"]["verdict"]
    assert v["onnx-fp32"]["predictions"] == y.tolist()
    for name in ("onnx-fp32", "onnx-int8"):
        from components.serve.variants import sha256_file

        assert v[name]["sha256"] == sha256_file(variant_file(model_dir, name))
    choice = choose_variant(record, "cpu")
    assert choice.variant == "onnx-fp32" and "passed over: onnx-int8" in choice.reason

    # the whole step's way: built, judged, written beside the model files
    rebuilt = tmp_path / "rebuilt"
    shutil.copytree(small_model, rebuilt)
    record = record_variants(rebuilt, texts, y, reference, 5, cfg)
    assert json.loads((rebuilt / "variants.json").read_text()) == record
    served = load_variant(rebuilt, "onnx-int8")  # its sha256 matches the record
    got = predict_texts(served, texts).argmax(axis=1).tolist()
    assert got == record["variants"]["onnx-int8"]["predictions"]

    # a file that is not the evaluated one is refused at load
    variant_file(rebuilt, "onnx-int8").write_bytes(degraded.read_bytes())
    with pytest.raises(ModelLoadError, match="is not the evaluated"):
        load_variant(rebuilt, "onnx-int8")
    # and one the record names but that is missing is refused, not built afresh unjudged
    variant_file(rebuilt, "onnx-int8").unlink()
    with pytest.raises(ModelLoadError, match="recorded in variants.json .* but its file is absent"):
        load_variant(rebuilt, "onnx-int8")


def test_variants_judge_on_the_gates_metric_and_an_exact_variant_passes_a_zero_tolerance(
    tmp_path,
):
    from components.evaluate.gate import GateConfig
    from components.evaluate.variants import VariantConfig, _figures

    assert VariantConfig().metric == GateConfig().metric == "macro_f1"
    y = np.array([0, 1, 2, 3, 4] * 20)
    same = _figures(y, y, y, 5, VariantConfig(tolerance=0.0, resamples=200), tmp_path,
                    tmp_path / "absent.onnx")  # fmt: skip
    assert same["eligible"] and same["agreement_with_fp32"] == 1.0
    assert "not below -0.0000" in same["verdict"]


def test_a_variant_that_cannot_be_built_is_refused_and_the_step_goes_on(
    small_model, texts, tmp_path, monkeypatch
):
    import components.evaluate.variants as variants

    def broken(model_dir, names):
        raise RuntimeError(f"exporter failed on {names[0]}\nlong traceback text")

    monkeypatch.setattr(variants, "build_variant_files", broken)
    model_dir = tmp_path / "model"
    shutil.copytree(small_model, model_dir)
    reference = predict_texts(load_variant(model_dir, "torch-fp32"), texts[:8])
    y = reference.argmax(axis=1)
    record = variants.evaluate_variants(model_dir, texts[:8], y, reference, 5,
                                        variants.VariantConfig(bf16=False))  # fmt: skip
    for name in ("onnx-fp32", "onnx-int8"):
        assert record["variants"][name] == {
            "eligible": False, "verdict": f"not built: exporter failed on {name}"}  # fmt: skip
    assert choose_variant(record, "cpu").variant == "torch-fp32"


def test_the_onnx_runtime_threads_follow_the_pods_cpu_quota(tmp_path):
    import os

    from components.serve.backends import cpu_budget

    cpus = len(os.sched_getaffinity(0))
    quota = tmp_path / "cpu.max"
    quota.write_text("100000 100000\n")  # a pod limited to 1 CPU
    assert cpu_budget(quota) == 1
    quota.write_text("150000 100000\n")  # 1.5 CPUs: two threads share the quota
    assert cpu_budget(quota) == min(2, cpus)
    quota.write_text("max 100000\n")  # no limit: the affinity mask
    assert cpu_budget(quota) == cpus
    assert cpu_budget(tmp_path / "absent") == cpus


def test_the_held_set_carries_each_variants_answer_for_sampled_test_rows():
    from components.evaluate.job import smoke_set

    y = np.array([0, 1, 0, 1, 0, 1])
    probs = np.eye(2)[y] * 0.9 + 0.05
    texts = [f"review {i}" for i in range(6)]
    # the variants were scored on test rows 1, 2 and 5 only
    variants = {"torch-fp32": {"predictions": [1, 0, 1]}, "onnx-int8": {"predictions": [1, 1, 0]}}
    held = smoke_set(texts, y, probs, ["neg", "pos"], size=4, variants=variants,
                     test_rows=[1, 2, 5])  # fmt: skip
    assert [r["text"] for r in held] == ["review 1", "review 2", "review 5"]
    assert [r["variants"]["onnx-int8"] for r in held] == ["pos", "pos", "neg"]
    assert [r["label"] for r in held] == ["pos", "neg", "pos"]


def test_predictions_come_back_in_input_order_whatever_the_buckets(small_model, texts):
    backend = load_variant(small_model, "torch-fp32")
    some = texts[:12]
    together = predict_texts(backend, some, batch_size=4)
    alone = np.concatenate([predict_texts(backend, [t]) for t in some])
    np.testing.assert_allclose(together, alone, atol=1e-5)
