"""Serving benchmark: our batching predictor vs one-at-a-time and an HF pipeline server.

Three HTTP servers on this machine serve the same save_pretrained model (a small BERT with
random weights: only speed is measured): ours with dynamic batching, ours with batching off
(max_batch_size 1), and a Hugging Face ``pipeline`` inside a plain kserve.Model. For each
concurrency level, a closed-loop load of ``--requests`` single-review V1 requests hits each
server in turn (interleaved, repeated); we record throughput and p50/p95/p99 latency.
Writes results/serve.json (or serve-<gpu>.json) and a PNG.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.common import RESULTS, hardware, median, write_result  # noqa: E402
from components.common.processes import free_port, stop_process  # noqa: E402

SERVERS = {
    "ours (dynamic batching)": [
        "-m",
        "components.serve",
        "--max_batch_size",
        "64",
        "--max_batch_delay_ms",
        "5",
    ],
    "one-at-a-time": [
        "-m",
        "components.serve",
        "--max_batch_size",
        "1",
        "--max_batch_delay_ms",
        "0",
    ],
    "HF pipeline in kserve.Model": ["-m", "benchmarks.hf_pipeline_server"],
}


def build_model(out: Path, layers: int, hidden: int, heads: int) -> Path:
    from components.common.schema import label_map_for
    from components.train.data import train_wordpiece
    from components.train.model import build_small_bert
    from pipelines.generate import GeneratorConfig, generate

    raw = out / "raw"
    generate(GeneratorConfig(rows=5000, seed=2), raw)
    import pandas as pd

    from components.common.schema import pandas_read_options

    texts = pd.concat([pd.read_csv(f, **pandas_read_options()) for f in raw.glob("*.gz")])[
        "review_body"
    ].tolist()
    tokenizer = train_wordpiece(texts, 8000, 64)
    model = build_small_bert(
        len(tokenizer),
        layers,
        hidden,
        heads,
        label_map_for("star_rating"),
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    return out / "model"


def start(name: str, model_dir: Path, log: Path) -> tuple[int, str]:
    port, grpc = free_port(), free_port()
    argv = [
        sys.executable,
        *SERVERS[name],
        "--model_name",
        "m",
        "--model_dir",
        str(model_dir),
        "--http_port",
        str(port),
        "--grpc_port",
        str(grpc),
    ]
    with open(log, "w") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ)
        )
    url = f"http://127.0.0.1:{port}/v1/models/m"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).json().get("ready"):
                return proc.pid, url + ":predict"
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{name} did not start; see {log}")


async def load(url: str, concurrency: int, requests: int, texts: list[str]) -> dict:
    """A closed loop of ``concurrency`` clients sending ``requests`` single-review requests.

    aiohttp, not httpx: httpx's async pool serialises bursts of responses and became the
    bottleneck itself at concurrency 32 and above on this machine.
    """
    import aiohttp

    latencies: list[float] = []
    queue = list(range(requests))

    async def client(session: aiohttp.ClientSession) -> None:
        while queue:
            i = queue.pop()
            start = time.perf_counter()
            async with session.post(url, json={"instances": [texts[i % len(texts)]]}) as r:
                r.raise_for_status()
                await r.read()
            latencies.append(time.perf_counter() - start)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {
        "rps": requests / wall,
        "p50": float(np.percentile(lat, 50)),
        "p95": float(np.percentile(lat, 95)),
        "p99": float(np.percentile(lat, 99)),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 8, 32, 64], help="concurrent clients"
    )
    p.add_argument("--requests", type=int, default=400, help="requests per measurement")
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions")
    p.add_argument("--layers", type=int, default=2, help="BERT layers (bert-base: 12)")
    p.add_argument("--hidden", type=int, default=128, help="hidden size (bert-base: 768)")
    p.add_argument("--heads", type=int, default=2, help="attention heads (bert-base: 12)")
    args = p.parse_args(argv)
    texts = [
        f"Review {i}: the card arrived quickly and works well, pretty solid value overall."
        for i in range(500)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(Path(tmp), args.layers, args.hidden, args.heads)
        servers = {
            name: start(name, model_dir, Path(tmp) / f"{i}.log") for i, name in enumerate(SERVERS)
        }
        results: dict = {name: {c: [] for c in args.concurrency} for name in SERVERS}
        try:
            for c in args.concurrency:
                for rep in range(args.reps):
                    for name, (_, url) in servers.items():
                        asyncio.run(load(url, c, min(50, args.requests), texts))  # warm
                        results[name][c].append(
                            asyncio.run(load(url, c, max(args.requests, 4 * c), texts))
                        )
                    print(
                        f"c={c} rep={rep}: "
                        + ", ".join(f"{n}: {results[n][c][-1]['rps']:.0f} req/s" for n in SERVERS),
                        flush=True,
                    )
        finally:
            for pid, _ in servers.values():
                stop_process(pid)
    summary = {
        name: {
            c: {k: median([r[k] for r in runs]) for k in ("rps", "p50", "p95", "p99")}
            for c, runs in per.items()
        }
        for name, per in results.items()
    }
    ours, one, hf = (summary[n] for n in SERVERS)
    rows = []
    for c in args.concurrency:
        for base_name, base in (("one-at-a-time", one), ("HF pipeline in kserve.Model", hf)):
            rows.append(
                {
                    "case": f"concurrency={c}",
                    "ours": round(ours[c]["rps"], 1),
                    "baseline": base_name,
                    "baseline_value": round(base[c]["rps"], 1),
                    "ratio": round(ours[c]["rps"] / base[c]["rps"], 3),
                    "ours_p50_ms": round(ours[c]["p50"], 2),
                    "ours_p95_ms": round(ours[c]["p95"], 2),
                    "ours_p99_ms": round(ours[c]["p99"], 2),
                    "baseline_p50_ms": round(base[c]["p50"], 2),
                    "baseline_p99_ms": round(base[c]["p99"], 2),
                }
            )
    gpu = hardware()["gpu"]
    name = "serve" if not gpu else f"serve-{gpu.split()[-1]}"
    path = write_result(
        name,
        {
            "unit": "req/s",
            "higher_is_better": True,
            "rows": rows,
            "detail": summary,
            "config": {
                "layers": args.layers,
                "hidden": args.hidden,
                "seq_max": 64,
                "requests": args.requests,
            },
        },
    )
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for label, data in zip(SERVERS, (ours, one, hf), strict=True):
        a.plot(args.concurrency, [data[c]["rps"] for c in args.concurrency], "o-", label=label)
        b.plot(args.concurrency, [data[c]["p50"] for c in args.concurrency], "o-", label=label)
    a.set(xscale="log", xlabel="concurrent clients", ylabel="requests/s", title="Throughput")
    b.set(
        xscale="log",
        yscale="log",
        xlabel="concurrent clients",
        ylabel="p50 latency (ms)",
        title="Latency",
    )
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=110)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
