"""What the faster serving backends cost in accuracy, on the real Electronics test split.

The quality benchmark's ``minilm`` case (pretrained all-MiniLM-L6-v2 fine-tuned by our train
step on the 8,000 real Electronics training reviews, 3 epochs, seq 64) is trained once; its
1,000 test reviews are then scored by each predictor backend the way the predictor scores them
(tokenize, token-budget buckets, forward): ``torch`` fp32 (the reference the gate approved),
``onnx`` (ONNX Runtime, fused graph), ``onnx-int8`` (int8 dynamic quantization) and ``torch``
bf16 (the number format the predictor serves on a GPU, computed here on the CPU). Recorded:
accuracy and macro-F1 with bootstrap intervals, the paired difference with fp32 (interval), the
share of reviews whose predicted star equals fp32's, the largest probability difference.
Writes results/serve-accuracy.json; ``benchmarks/serve.py`` copies it into serve.json.

``python -m benchmarks.serve_accuracy`` (about 10 minutes on 2 cores); ``--quick`` for a dry run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import write_result
from benchmarks.quality import Case, prepare_electronics, train_case, with_intervals

# name: (backend, precision); bf16 runs on this CPU with the same number format a GPU serves
VARIANTS = {"torch": ("torch", "fp32"), "onnx": ("onnx", "fp32"),
            "onnx-int8": ("onnx-int8", "fp32"), "torch bf16": ("torch", "bf16")}  # fmt: skip


def backend_probs(model_dir: Path, variant: str, texts: list[str]) -> np.ndarray:
    """Probabilities as the predictor computes them with ``variant`` (batches of 64)."""
    from components.serve.backends import make_backend
    from components.serve.batching import TokenBudgetBatcher

    backend, precision = VARIANTS[variant]
    model = make_backend(model_dir, backend, device="cpu", precision=precision)
    batcher = TokenBudgetBatcher(model.forward, model.pad_id, max_batch_size=64)
    seqs = model.tokenize(texts)
    return np.concatenate([batcher.run_batch(seqs[i : i + 64]) for i in range(0, len(seqs), 64)])


def compare(model_dir: Path, texts: list[str], y: np.ndarray, labels: list[str],
            resamples: int) -> dict:  # fmt: skip
    from components.evaluate.paired import paired_bootstrap

    probs = {name: backend_probs(model_dir, name, texts) for name in VARIANTS}
    ref = probs["torch"]
    out = {}
    for name, p in probs.items():
        entry = with_intervals(y, p, labels, resamples)
        if name != "torch":
            entry["vs_fp32"] = {
                metric: paired_bootstrap(y, p.argmax(1), ref.argmax(1), len(labels), metric,
                                         resamples).to_dict()
                for metric in ("accuracy", "macro_f1")
            }  # fmt: skip
            entry["agreement_with_fp32"] = float((p.argmax(1) == ref.argmax(1)).mean())
            entry["max_probability_difference"] = float(np.abs(p - ref).max())
        out[name] = entry
    return out


def _fmt(d: dict) -> str:
    return f"{d['difference']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="a few training steps on a few rows")
    p.add_argument("--nproc", type=int, default=2, help="training processes")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--keep", type=Path, default=None, help="copy the trained model here")
    args = p.parse_args(argv)
    from components.common.schema import LabelMap

    work = Path(tempfile.mkdtemp(prefix="bench-serve-accuracy-"))
    try:
        data = prepare_electronics(work, args.quick)
        label_map = LabelMap.from_dict(json.loads((data / "stats.json").read_text())["label_map"])
        labels = [label_map.id2label[i] for i in range(label_map.num_labels)]
        case = Case("minilm", "electronics")
        (work / "train").mkdir()
        model_dir, seconds = train_case(case, data, work / "train", args.nproc, args.quick)
        if args.keep:
            shutil.copytree(model_dir, args.keep, dirs_exist_ok=True)
        test = pd.read_parquet(data / "test")
        texts, y = test["review_body"].tolist(), test["label"].to_numpy().astype(int)
        results = compare(model_dir, texts, y, labels, args.resamples)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [
        {"case": f"electronics test ({len(y)} rows), {name} vs torch fp32",
         "metric": "accuracy", "unit": "share", "ours": round(r["accuracy"]["value"], 4),
         "baseline": "torch fp32",
         "baseline_value": round(results["torch"]["accuracy"]["value"], 4),
         "ratio": round(r["accuracy"]["value"] / results["torch"]["accuracy"]["value"], 4),
         "difference": _fmt(r["vs_fp32"]["accuracy"]),
         "agreement": round(r["agreement_with_fp32"], 4)}
        for name, r in results.items() if name != "torch"
    ]  # fmt: skip
    path = write_result(
        "serve-accuracy",
        {"unit": "share", "higher_is_better": True, "rows": rows, "results": results,
         "config": {"model": case.model, "epochs": case.epochs, "seq": 64, "train_seconds":
                    round(seconds, 1), "quick": args.quick}},
    )  # fmt: skip
    for row in rows:
        print(row)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
