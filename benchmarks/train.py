"""Training throughput: our trainer vs the Hugging Face ``Trainer``, side by side.

Same model (a small BERT built from config), same tokenized data, batch size, sequence length,
padding multiple and precision; single process on this machine. Three comparisons: each tool's
default sampling (ours groups batches by length, the Trainer samples at random), then both
grouped and both random, which isolate the training loop from the choice of default. Each run
trains ``--steps`` optimizer steps; throughput is samples/s over the steps after a warm-up
window, measured the same way for both. Runs are interleaved and repeated; medians are
reported. On a GPU the script also reports model FLOPs utilisation (6 x non-embedding params x
tokens + attention FLOPs over the GPU's peak dense bf16). Writes results/train.json (or
train-<gpu>.json) and a PNG.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from benchmarks.common import (  # noqa: E402
    RESULTS,
    flops_per_sample,
    hardware,
    median,
    peak_bf16,
    write_result,
)

BASELINE = "Hugging Face Trainer"
PAD_MULTIPLE = 8  # our PadCollator's default; the Trainer's collator gets the same
# (name, ours grouped by length?, Trainer grouped by length?): each tool's default first, then
# both with the same sampling, so the gain of the loop and the gain of the default show apart.
CASES = (
    ("defaults (ours: length-grouped, Trainer: random)", True, False),
    ("both length-grouped", True, True),
    ("both random", False, False),
)
WARMUP = 10


def prepare(data: Path, rows: int) -> None:
    """Generated reviews as the ingest step would write them (train/validation + stats)."""
    from components.common.schema import label_map_for, pandas_read_options
    from pipelines.generate import GeneratorConfig, generate

    raw = data / "raw"
    generate(GeneratorConfig(rows=rows, seed=1), raw)
    df = pd.concat([pd.read_csv(f, **pandas_read_options()) for f in sorted(raw.glob("*.gz"))])
    df = df.assign(label=df["star_rating"].astype(int) - 1)[["review_body", "label"]]
    for name, part in (
        ("train", df.iloc[: int(len(df) * 0.9)]),
        ("validation", df.iloc[int(len(df) * 0.9) :]),
    ):
        (data / name).mkdir(parents=True)
        part.to_parquet(data / name / "part-0.parquet", index=False)
    (data / "stats.json").write_text(
        json.dumps({"label_map": label_map_for("star_rating").to_dict()})
    )


def worker_ours(args: argparse.Namespace) -> dict:
    from components.train.config import TrainConfig
    from components.train.trainer import run_training

    with tempfile.TemporaryDirectory() as tmp:
        results = run_training(
            TrainConfig(
                data=args.data,
                output_dir=f"{tmp}/out",
                run_id="bench",
                checkpoint_uri=f"{tmp}/ck",
                batch_size=args.batch,
                max_steps=args.steps,
                max_seq_length=args.seq,
                num_layers=args.layers,
                hidden_size=args.hidden,
                num_heads=args.heads,
                learning_rate=1e-4,
                log_every=WARMUP,
                mlflow=False,
                max_eval_rows=64,
                precision="bf16" if args.gpu else "fp32",
                group_by_length=args.grouped,
            )
        )
    return {"samples_per_s": results["steady_samples_per_s"]}


def worker_hf(args: argparse.Namespace) -> dict:
    from transformers import (
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from components.common.schema import label_map_for
    from components.train.data import TokenizedDataset, read_split, train_wordpiece
    from components.train.model import build_small_bert

    train = read_split(Path(args.data), "train")
    tokenizer = train_wordpiece(train["review_body"].tolist(), 8000, args.seq)
    ds = TokenizedDataset(
        train["review_body"].tolist(), train["label"].tolist(), tokenizer, args.seq
    )
    rows = [{"input_ids": ids, "labels": label} for ids, label in (ds[i] for i in range(len(ds)))]
    for row in rows:  # what the Trainer's LengthGroupedSampler reads
        row["length"] = len(row["input_ids"])
    model = build_small_bert(
        len(tokenizer),
        args.layers,
        args.hidden,
        args.heads,
        label_map_for("star_rating"),
        pad_token_id=tokenizer.pad_token_id,
    )
    marks: dict[int, float] = {}

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):  # noqa: ANN001
            marks[state.global_step] = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=args.batch,
            max_steps=args.steps,
            learning_rate=1e-4,
            logging_steps=WARMUP,
            save_strategy="no",
            report_to=[],
            use_cpu=not args.gpu,
            bf16=bool(args.gpu),
            dataloader_num_workers=0,
            disable_tqdm=True,
            warmup_steps=max(1, args.steps // 10),
            train_sampling_strategy="group_by_length" if args.grouped else "random",
        )
        trainer = Trainer(
            model=model,
            args=targs,
            train_dataset=rows,
            data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=PAD_MULTIPLE),
            callbacks=[Clock()],
        )
        trainer.train()
    last = max(marks)
    return {
        "samples_per_s": (last - WARMUP) * args.batch / (marks[last] - marks[WARMUP]),
        "steps_seen": last,
    }


def run_worker(kind: str, args: argparse.Namespace, grouped: bool) -> float:
    argv = [
        sys.executable,
        "-m",
        "benchmarks.train",
        "--worker",
        kind,
        "--data",
        args.data,
        "--steps",
        str(args.steps),
        "--batch",
        str(args.batch),
        "--seq",
        str(args.seq),
        "--layers",
        str(args.layers),
        "--hidden",
        str(args.hidden),
        "--heads",
        str(args.heads),
        "--grouped" if grouped else "--no-grouped",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["samples_per_s"]


def padding(data: str, seq: int, batch: int) -> dict:
    """Tokens per sample the model sees (padding included), random vs length-grouped batches.

    The same tokenizer, sampler and collator as our trainer, over one epoch of the train split.
    """
    import numpy as np

    from components.train.data import (
        PadCollator,
        ShardedSampler,
        TokenizedDataset,
        read_split,
        train_wordpiece,
    )

    train = read_split(Path(data), "train")
    texts = train["review_body"].tolist()
    tokenizer = train_wordpiece(texts, 8000, seq)
    lengths = TokenizedDataset(texts, train["label"].tolist(), tokenizer, seq).lengths
    collator = PadCollator(tokenizer.pad_token_id)
    out = {"real_tokens_per_sample": round(float(np.mean(lengths)), 2)}
    for grouped in (False, True):
        sampler = ShardedSampler(lengths, 0, 1, seed=0, batch_size=batch, group_by_length=grouped)
        order = list(sampler)
        widths = [collator.width(max(lengths[i] for i in order[k : k + batch]))
                  for k in range(0, len(order) - batch + 1, batch)]  # fmt: skip
        out["grouped" if grouped else "random"] = round(float(np.mean(widths)), 2)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--worker", choices=["ours", "hf"], default=None, help=argparse.SUPPRESS)
    p.add_argument("--data", default=None, help="prepared data dir (default: generate)")
    p.add_argument("--rows", type=int, default=20_000, help="generated reviews")
    p.add_argument("--steps", type=int, default=120, help="optimizer steps per run")
    p.add_argument("--batch", type=int, default=32, help="batch size")
    p.add_argument("--seqs", type=int, nargs="+", default=[64], help="sequence lengths")
    p.add_argument("--seq", type=int, default=64, help=argparse.SUPPRESS)
    p.add_argument("--layers", type=int, default=2, help="BERT layers (bert-base: 12)")
    p.add_argument("--hidden", type=int, default=128, help="hidden size (bert-base: 768)")
    p.add_argument("--heads", type=int, default=2, help="attention heads (bert-base: 12)")
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions")
    p.add_argument(
        "--grouped", action=argparse.BooleanOptionalAction, default=True, help=argparse.SUPPRESS
    )
    args = p.parse_args(argv)
    import torch

    args.gpu = torch.cuda.is_available()
    if args.worker:
        print(json.dumps((worker_ours if args.worker == "ours" else worker_hf)(args)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        if args.data is None:
            args.data = str(Path(tmp) / "data")
            prepare(Path(args.data), args.rows)
        rows, detail, padded = [], [], {}
        for seq in args.seqs:
            args.seq = seq
            padded[str(seq)] = padding(args.data, seq, args.batch)
            print(f"seq={seq}: tokens per sample with padding {padded[str(seq)]}", flush=True)
            runs: dict[tuple[str, bool], list[float]] = {}
            needed = sorted({("ours", o) for _, o, _ in CASES} | {("hf", h) for _, _, h in CASES})
            for rep in range(args.reps):
                for kind, grouped in needed:  # interleaved, so drift hits every variant alike
                    runs.setdefault((kind, grouped), []).append(run_worker(kind, args, grouped))
                line = ", ".join(f"{k}{'/grouped' if g else ''} {v[-1]:.0f}"
                                 for (k, g), v in runs.items())  # fmt: skip
                print(f"seq={seq} rep={rep}: {line} samples/s", flush=True)
            hw = hardware()
            for case, ours_grouped, hf_grouped in CASES:
                o, h = median(runs[("ours", ours_grouped)]), median(runs[("hf", hf_grouped)])
                row = {
                    "case": f"seq={seq} batch={args.batch}, {case}",
                    "ours": round(o, 1),
                    "baseline": BASELINE,
                    "baseline_value": round(h, 1),
                    "ratio": round(o / h, 3),
                }
                if hw["gpu"]:
                    non_emb = 12 * args.layers * args.hidden**2  # attention + MLP per layer
                    peak = peak_bf16(hw["gpu"])
                    f = flops_per_sample(non_emb, seq, args.layers, args.hidden)
                    row["mfu_ours"] = round(o * f / peak, 4) if peak else None
                    row["mfu_baseline"] = round(h * f / peak, 4) if peak else None
                rows.append(row)
            detail.append({"seq": seq, **{f"{k}{'_grouped' if g else '_random'}": v
                                          for (k, g), v in runs.items()}})  # fmt: skip
    name = "train" if not hardware()["gpu"] else f"train-{hardware()['gpu'].split()[-1]}"
    payload = {
        "unit": "samples/s",
        "higher_is_better": True,
        "rows": rows,
        "detail": detail,
        # why length grouping pays: padded tokens per sample, random vs grouped batches
        "padded_tokens_per_sample": padded,
        "config": {
            "layers": args.layers,
            "hidden": args.hidden,
            "heads": args.heads,
            "batch": args.batch,
            "steps": args.steps,
            "precision": "bf16" if args.gpu else "fp32",
            "processes": 1,
        },
    }
    path = write_result(name, payload)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    labels = [r["case"].replace(", ", "\n", 1).replace(" (", "\n(") for r in rows]
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["ours"] for r in rows], 0.4, label="ours (torch loop)")
    ax.bar([x + 0.2 for x in xs], [r["baseline_value"] for r in rows], 0.4, label=BASELINE)
    ax.set(xticks=list(xs), xticklabels=labels, ylabel="samples/s", title="Training throughput")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=110)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
