"""GPU check (``make gpu-check``): our training loop at bert-base size against the HF Trainer.

One script for a lent GPU machine (which has torch, transformers and onnxruntime, and no
pandas, MLflow or Spark: ``tools/gpu/check.sh`` adds the few wheels it needs). It measures:

- **training throughput** of our ``Trainer`` (the loop the train step runs: fused AdamW, bf16
  autocast, clipping, warm-up/decay schedule) and of the Hugging Face ``Trainer`` with the same
  settings (``bf16``, ``adamw_torch_fused``, same model, data, batch, steps), samples/s and
  tokens/s over the steps after a warm-up window, and model FLOPs utilisation
  (:func:`benchmarks.common.flops_per_sample` over the GPU's peak dense bf16);
- **bf16 vs fp32 parity**: the same short run in both precisions from the same seed; the
  training and validation losses must stay close (``parity.ok``).

The model is a BERT of bert-base's shape (12 layers, hidden 768, 12 heads) built from its
config with a WordPiece vocabulary trained on the synthetic reviews (no download); every
review fills the 128 tokens, so padding plays no part in the comparison. Writes
``train-<gpu>.json`` in ``--output-dir``. ``--dry-run`` runs the same code with a tiny model on
CPU in seconds (what the tests run, and what ``make gpu-check`` does on a machine without a GPU).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, flops_per_sample, hardware, peak_bf16

BASELINE = "Hugging Face Trainer"
WARMUP = 10
FULL = {"layers": 12, "hidden": 768, "heads": 12, "seq": 128, "batch": 64, "steps": 200,
        "parity_steps": 60, "vocab": 30522}  # fmt: skip
DRY = {"layers": 2, "hidden": 64, "heads": 2, "seq": 32, "batch": 8, "steps": 24,
       "parity_steps": 12, "vocab": 2000}  # fmt: skip


def synthetic_reviews(rows: int, words: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """Reviews of ``words`` Zipf-distributed pseudo-words and random star labels (0..4)."""
    rng = np.random.default_rng(seed)
    ids = np.minimum(rng.zipf(1.2, size=(rows, words)), 20_000)
    texts = [" ".join(f"w{i}" for i in row) for row in ids]
    return texts, rng.integers(0, 5, size=rows).tolist()


def synthetic_trainer(config, texts: list[str], labels: list[int], val_rows: int):  # noqa: ANN001, ANN201
    """Our Trainer, reading the synthetic reviews instead of the ingest step's Parquet."""
    from components.common.schema import label_map_for
    from components.train.trainer import Trainer

    class SyntheticTrainer(Trainer):
        def _read_data(self):  # noqa: ANN202
            def frame(lo: int, hi: int) -> dict:
                return {"review_body": np.array(texts[lo:hi], dtype=object),
                        "label": np.array(labels[lo:hi])}  # fmt: skip

            n = len(texts)
            return label_map_for("star_rating"), frame(0, n - val_rows), frame(n - val_rows, n)

    return SyntheticTrainer(config)


def run_ours(shape: dict, texts, labels, steps: int, precision: str, tmp: Path,
             log_every: int = WARMUP) -> dict:  # fmt: skip
    from components.train.config import TrainConfig

    cfg = TrainConfig(
        data="synthetic", output_dir=str(tmp / f"out-{precision}-{steps}"),
        run_id=f"gpu-check-{precision}-{steps}", checkpoint_uri=str(tmp / "ckpt"),
        model_name_or_path="scratch", num_layers=shape["layers"], hidden_size=shape["hidden"],
        num_heads=shape["heads"], vocab_size=shape["vocab"], max_seq_length=shape["seq"],
        batch_size=shape["batch"], learning_rate=1e-4, max_steps=steps, log_every=log_every,
        precision=precision, mlflow=False, group_by_length=False, seed=7,
    )  # fmt: skip
    results = synthetic_trainer(cfg, texts, labels, val_rows=4 * shape["batch"]).run()
    return {"samples_per_s": results["steady_samples_per_s"], "final": results["final"]}


def run_hf(shape: dict, texts, labels, steps: int, bf16: bool, tmp: Path) -> dict:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from components.common.schema import label_map_for
    from components.train.data import PadCollator, TokenizedDataset, train_wordpiece
    from components.train.model import build_small_bert

    torch.manual_seed(7)
    tokenizer = train_wordpiece(texts, shape["vocab"], shape["seq"])
    ds = TokenizedDataset(texts, labels, tokenizer, shape["seq"])
    rows = [{"input_ids": ids, "labels": label} for ids, label in (ds[i] for i in range(len(ds)))]
    collate = PadCollator(tokenizer.pad_token_id)
    model = build_small_bert(
        len(tokenizer), shape["layers"], shape["hidden"], shape["heads"],
        label_map_for("star_rating"), pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    marks: dict[int, float] = {}

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):  # noqa: ANN001
            marks[state.global_step] = time.perf_counter()

    args = TrainingArguments(
        output_dir=str(tmp / "hf"), per_device_train_batch_size=shape["batch"], max_steps=steps,
        # our defaults: 10% linear warm-up (a float warmup_steps is a ratio in transformers 5)
        learning_rate=1e-4, warmup_steps=0.1, weight_decay=0.01, max_grad_norm=1.0,
        lr_scheduler_type="linear", optim="adamw_torch_fused", bf16=bf16,
        use_cpu=not torch.cuda.is_available(), logging_steps=WARMUP, save_strategy="no",
        report_to=[], dataloader_num_workers=0, seed=7, disable_tqdm=True,
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=rows,
                      data_collator=lambda b: collate([(r["input_ids"], r["labels"]) for r in b]),
                      callbacks=[Clock()])  # fmt: skip
    trainer.train()
    timed = sorted(k for k in marks if k > WARMUP)
    seconds = marks[timed[-1]] - marks[WARMUP] if timed else float("nan")
    return {"samples_per_s": len(timed) * shape["batch"] / seconds if timed else None}


def _free() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def parity(fp32: dict, bf16: dict) -> dict:
    """bf16 against fp32 on the same short run: validation loss and accuracy differences."""
    a, b = fp32["final"], bf16["final"]
    rel = abs(b["val_loss"] - a["val_loss"]) / max(abs(a["val_loss"]), 1e-9)
    return {
        "fp32": a, "bf16": b, "val_loss_rel_diff": round(rel, 4),
        "val_accuracy_diff": round(b["val_accuracy"] - a["val_accuracy"], 4),
        # bf16 keeps 8 bits of mantissa: a few percent of loss on a short run is expected
        "ok": rel <= 0.05,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__)
    p.add_argument("--dry-run", action="store_true", help="tiny model on CPU (seconds)")
    p.add_argument("--output-dir", type=Path, default=RESULTS, help="where train-<gpu>.json goes")
    p.add_argument("--steps", type=int, help="optimizer steps per throughput run")
    p.add_argument("--batch", type=int, help="batch size (per GPU)")
    args = p.parse_args(argv)
    import torch

    hw = hardware()
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU on this machine; use --dry-run for the CPU rehearsal",
              file=sys.stderr)  # fmt: skip
        return 2
    shape = dict(DRY if args.dry_run else FULL)
    shape.update({k: v for k, v in (("steps", args.steps), ("batch", args.batch)) if v})
    rows = shape["batch"] * (shape["steps"] + 4) + 4 * shape["batch"]
    texts, labels = synthetic_reviews(rows, shape["seq"] + 8)
    precision = "bf16"
    stages: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        ours = run_ours(shape, texts, labels, shape["steps"], precision, Path(tmp))
        stages["ours_s"] = round(time.perf_counter() - t, 1)
        _free()
        t = time.perf_counter()
        hf = run_hf(shape, texts, labels, shape["steps"], torch.cuda.is_available(), Path(tmp))
        stages["hf_s"] = round(time.perf_counter() - t, 1)
        _free()
        t = time.perf_counter()
        short = texts[: shape["batch"] * (shape["parity_steps"] + 4)]
        runs = {p_: run_ours(shape, short, labels, shape["parity_steps"], p_, Path(tmp), 5)
                for p_ in ("fp32", "bf16")}  # fmt: skip
        stages["parity_s"] = round(time.perf_counter() - t, 1)
    non_emb = 12 * shape["layers"] * shape["hidden"] ** 2
    f = flops_per_sample(non_emb, shape["seq"], shape["layers"], shape["hidden"])
    peak = peak_bf16(hw["gpu"])
    row = {
        "case": f"bert-base shape ({shape['layers']}x{shape['hidden']}), seq {shape['seq']}, "
        f"batch {shape['batch']}, {precision if hw['gpu'] else 'fp32 (CPU)'}",
        "ours": round(ours["samples_per_s"], 1),
        "baseline": BASELINE,
        "baseline_value": round(hf["samples_per_s"], 1),
        "ratio": round(ours["samples_per_s"] / hf["samples_per_s"], 3),
        "ours_tokens_per_s": round(ours["samples_per_s"] * shape["seq"]),
        "mfu_ours": round(ours["samples_per_s"] * f / peak, 4) if peak else None,
        "mfu_baseline": round(hf["samples_per_s"] * f / peak, 4) if peak else None,
    }
    gpu = (hw["gpu"] or "cpu-dry-run").split()[-1]
    payload = {
        "benchmark": f"train-{gpu}", "hardware": hw, "unit": "samples/s",
        "higher_is_better": True, "dry_run": args.dry_run, "rows": [row],
        "parity": parity(runs["fp32"], runs["bf16"]), "stage_seconds": stages,
        "config": {**shape, "warmup_steps": WARMUP, "torch": torch.__version__},
    }  # fmt: skip
    args.output_dir.mkdir(parents=True, exist_ok=True)
    path = args.output_dir / f"train-{gpu}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(row), flush=True)
    print(f"parity ok: {payload['parity']['ok']}; written {path}", flush=True)
    return 0 if payload["parity"]["ok"] or args.dry_run else 1


if __name__ == "__main__":
    sys.exit(main())
