"""Serving benchmark at real model sizes and real review lengths, against the peers, in one run.

Servers on this machine, each serving the same save_pretrained model over HTTP:

- **ours** (``components.serve``, token-budget batching) with each backend: ``onnx-int8``,
  ``onnx`` and ``torch`` fp32;
- **previous**: our predictor as it was before token-budget batching (commit ``PREVIOUS``:
  dynamic batching with a 5 ms window, eager fp32 PyTorch), run from a ``git archive`` of
  that commit;
- **one-at-a-time**: ours with ``--max_batch_size 1`` (torch fp32): no batching across requests;
- **HF pipeline in kserve.Model** (``benchmarks/hf_pipeline_server.py``): one pipeline call per
  request, what KServe's huggingfaceserver does.

Models: ``minilm`` is the pretrained all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads) with a
fresh 5-class head, ``bert-base`` a bert-base-shaped BERT (12 layers, hidden 768) with random
weights and the bert-base-uncased vocabulary; both truncate at 64 tokens as the train step does.
Only speed is measured here (``benchmarks/serve_accuracy.py`` measures what the backends cost
in accuracy with a fine-tuned model). Requests carry one real Electronics review each, in a
fixed shuffled order (``../shared/data/reviews``).

For each concurrency level, a closed loop of ``--requests`` V1 requests hits each server in
turn (interleaved, ``--reps`` times; medians recorded): req/s, tokens/s (real tokens of the
texts answered) and p50/p95/p99 latency. Also: the best backend over gRPC (Open Inference
Protocol V2, ``tritonclient.grpc.aio``), and an overload run: ``--overload`` clients at once
against ours (default queue bound), counting 200s, 503s with Retry-After, and anything else.
Writes results/serve.json (or serve-<gpu>.json) and a PNG.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, hardware, median, write_result
from components.common.processes import free_port, process_alive, stop_process

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHARED_DATA_DIR", ROOT.parent / "shared" / "data"))
REVIEWS = "reviews/amazon_reviews_us_Electronics_v1_00.sample.tsv"
PREVIOUS = "9a9ba9bdfb823e13e5a4fbbecf2a11e2ad566b94"  # before token-budget batching
SEQ = 64
DEFAULT = "ours, default (gated variant)"
BEST = "ours, onnx-int8"
PREV = "previous (dynamic batching, torch fp32)"
ONE = "one-at-a-time (torch fp32)"
HF = "HF pipeline in kserve.Model"
SERVERS = {
    # what a deployment serves on a CPU: the fastest variant the gate found eligible
    DEFAULT: ["-m", "components.serve", "--variant", "auto", "--target", "cpu"],
    BEST: ["-m", "components.serve", "--backend", "onnx-int8"],
    "ours, onnx": ["-m", "components.serve", "--backend", "onnx"],
    "ours, torch fp32": ["-m", "components.serve", "--backend", "torch"],
    "ours, torch bf16": ["-m", "components.serve", "--backend", "torch", "--precision", "bf16"],
    PREV: ["-m", "components.serve", "--max_batch_size", "64", "--max_batch_delay_ms", "5"],
    ONE: ["-m", "components.serve", "--backend", "torch", "--max_batch_size", "1"],
    HF: ["-m", "benchmarks.hf_pipeline_server"],
}
GPU_SERVERS = {  # on a CUDA machine: bf16, with and without CUDA graphs, and the HF pipeline
    "ours, torch bf16 + CUDA graphs": ["-m", "components.serve", "--backend", "torch",
                                       "--cuda_graphs"],
    "ours, torch bf16": ["-m", "components.serve", "--backend", "torch"],
    HF: ["-m", "benchmarks.hf_pipeline_server"],
}  # fmt: skip
SIZES = {"minilm": (6, 384, 12), "bert-base": (12, 768, 12), "tiny": (2, 64, 2)}


def reviews(limit: int = 10_000, seed: int = 0) -> tuple[list[str], str]:
    """Real Electronics review bodies (HTML entities and all), shuffled with a fixed seed.

    Where the shared data is absent (a lent GPU machine), synthetic reviews that fill the
    64 tokens instead (what the GPU goal is stated for: seq 64); the source is recorded.
    """
    path = SHARED / REVIEWS
    if not path.exists():
        from benchmarks.gpu_check import synthetic_reviews

        return synthetic_reviews(2000, SEQ + 8, seed)[0], "synthetic (64 tokens each)"
    import csv

    with open(path, encoding="utf-8", newline="") as f:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        texts = [r["review_body"] for r in rows if (r.get("review_body") or "").strip()][:limit]
    order = np.random.default_rng(seed).permutation(len(texts))
    return [texts[i] for i in order], f"real ({path.name})"


def build_model(out: Path, size: str, texts: list[str]) -> Path:
    """A save_pretrained classifier of the given size, truncating at ``SEQ`` tokens."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    from benchmarks.quality import PACKAGED
    from components.common.inference import LABEL_MAP_FILE
    from components.common.schema import label_map_for
    from components.train.model import build_small_bert, label_config
    from components.train.pretrained import resolve_package

    label_map = label_map_for("star_rating")
    torch.manual_seed(0)
    if size == "minilm":
        path = str(resolve_package(PACKAGED))
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = BertForSequenceClassification.from_pretrained(path, **label_config(label_map))
    else:
        vocab = SHARED / "bert-base-uncased-tokenizer"
        if vocab.is_dir():
            tokenizer = AutoTokenizer.from_pretrained(str(vocab))
        else:  # no shared data here: a WordPiece vocabulary of bert-base's size from the texts
            from components.train.data import train_wordpiece

            tokenizer = train_wordpiece(texts, 30522, SEQ)
        layers, hidden, heads = SIZES[size]
        model = build_small_bert(len(tokenizer), layers, hidden, heads, label_map,
                                 pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    model_dir = out / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    (model_dir / LABEL_MAP_FILE).write_text(
        json.dumps({**label_map.to_dict(), "max_seq_length": SEQ})
    )
    return model_dir


def judge_variants(model_dir: Path, rows: int = 1000, seed: int = 1) -> dict | None:
    """The evaluate step's variant rule, applied to the benchmark's model before it is served.

    ``rows`` real Electronics reviews with their own star ratings as labels (the model's head
    is untrained here, so accuracy is near chance: what matters is each variant's paired
    difference to fp32 on the same rows, and its agreement). Writes ``variants.json`` and the
    variant files beside the model, as registration does; the default server then picks.
    """
    import csv

    from components.evaluate.variants import VariantConfig, public, record_variants
    from components.serve.variants import choose_variant, load_variant, predict_texts

    path = SHARED / REVIEWS
    if not path.exists():
        return None
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        found = [(r["review_body"], int(r["star_rating"])) for r in reader
                 if (r["review_body"] or "").strip() and r["star_rating"].isdigit()]  # fmt: skip
    pick = np.random.default_rng(seed).permutation(len(found))[:rows]
    texts, y = [found[i][0] for i in pick], np.array([found[i][1] - 1 for i in pick])
    t = time.perf_counter()
    reference = predict_texts(load_variant(model_dir, "torch-fp32"), texts)
    record = record_variants(model_dir, texts, y, reference, 5, VariantConfig())
    choice = choose_variant(record, "cpu")
    print(f"gate: serving {choice.variant} ({choice.reason})", flush=True)
    return {"rows": len(texts), "labels": "the reviews' own star ratings (untrained head)",
            "seconds": round(time.perf_counter() - t, 1), "choice": choice.to_dict(),
            **public(record)}  # fmt: skip


def previous_checkout(out: Path) -> Path:
    """The predictor's code at ``PREVIOUS``, unpacked from git."""
    target = out / "previous"
    target.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", PREVIOUS, "components"],
                             check=True, capture_output=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def start(name: str, argv: list[str], model_dir: Path, log: Path, pythonpath: Path) -> dict:
    port, grpc = free_port(), free_port()
    argv = [sys.executable, *argv, "--model_name", "m", "--model_dir", str(model_dir),
            "--http_port", str(port), "--grpc_port", str(grpc)]  # fmt: skip
    # appended, not replaced: a lent GPU machine's carried wheels are on the caller's path
    inherited = os.environ.get("PYTHONPATH", "")
    env = {**os.environ, "PYTHONPATH": ":".join(p for p in (str(pythonpath), str(ROOT), inherited)
                                                 if p)}  # fmt: skip
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env=env)  # fmt: skip
    import httpx

    url = f"http://127.0.0.1:{port}/v1/models/m"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(url, timeout=1).json().get("ready"):
                return {"pid": proc.pid, "url": url + ":predict", "grpc": f"127.0.0.1:{grpc}"}
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{name} did not start; see {log}")


def _summary(latencies: list[float], tokens: int, wall: float, errors: int) -> dict:
    lat = np.array(latencies) * 1000
    return {
        "rps": len(latencies) / wall,
        "tokens_per_s": tokens / wall,
        "p50": float(np.percentile(lat, 50)),
        "p95": float(np.percentile(lat, 95)),
        "p99": float(np.percentile(lat, 99)),
        "errors": errors,
    }


async def load_http(url: str, concurrency: int, requests: int, texts: list[str],
                    lengths: list[int], offset: int = 0) -> dict:  # fmt: skip
    """A closed loop of ``concurrency`` clients sending ``requests`` one-review V1 requests.

    aiohttp, not httpx: httpx's async pool serialises bursts of responses and became the
    bottleneck itself at concurrency 32 and above on this machine.
    """
    import aiohttp

    latencies: list[float] = []
    tokens = errors = 0
    queue = list(range(offset + requests - 1, offset - 1, -1))

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal tokens, errors
        while queue:
            i = queue.pop() % len(texts)
            start = time.perf_counter()
            async with session.post(url, json={"instances": [texts[i]]}) as r:
                await r.read()
                if r.status != 200:
                    errors += 1
                    continue
            latencies.append(time.perf_counter() - start)
            tokens += lengths[i]

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return _summary(latencies, tokens, wall, errors)


async def load_grpc(address: str, concurrency: int, requests: int, texts: list[str],
                    lengths: list[int], offset: int = 0) -> dict:  # fmt: skip
    """The same closed loop over gRPC (Open Inference Protocol V2) with tritonclient."""
    import tritonclient.grpc.aio as triton

    latencies: list[float] = []
    tokens = errors = 0
    queue = list(range(offset + requests - 1, offset - 1, -1))
    client = triton.InferenceServerClient(url=address)

    async def one() -> None:
        nonlocal tokens, errors
        while queue:
            i = queue.pop() % len(texts)
            tensor = triton.InferInput("review_body", [1], "BYTES")
            tensor.set_data_from_numpy(np.array([texts[i].encode()], dtype=object))
            start = time.perf_counter()
            try:
                await client.infer("m", [tensor])
            except triton.InferenceServerException:
                errors += 1
                continue
            latencies.append(time.perf_counter() - start)
            tokens += lengths[i]

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    await client.close()
    return _summary(latencies, tokens, wall, errors)


async def overload(url: str, clients: int, per_client: int, texts: list[str]) -> dict:
    """``clients`` clients at once, ``per_client`` requests each; a 503 waits its Retry-After."""
    import aiohttp

    counts: dict[str, int] = {"200": 0, "503": 0, "503 with Retry-After": 0, "other": 0}
    latencies: list[float] = []

    async def client(session: aiohttp.ClientSession, k: int) -> None:
        for j in range(per_client):
            text = texts[(k * per_client + j) % len(texts)]
            start = time.perf_counter()
            try:
                async with session.post(url, json={"instances": [text]}) as r:
                    await r.read()
                    status, retry = r.status, r.headers.get("Retry-After")
            except aiohttp.ClientError:
                counts["other"] += 1
                continue
            if status == 200:
                counts["200"] += 1
                latencies.append(time.perf_counter() - start)
            elif status == 503:
                counts["503"] += 1
                if retry and retry.isdigit():
                    counts["503 with Retry-After"] += 1
                    await asyncio.sleep(int(retry))
            else:
                counts["other"] += 1

    timeout = aiohttp.ClientTimeout(total=600)
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(session, k) for k in range(clients)))
        wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000 if latencies else np.zeros(1)
    return {"clients": clients, "requests": clients * per_client, **counts,
            "wall_s": round(wall, 1), "served_rps": round(counts["200"] / wall, 1),
            "p50_ms_of_200s": round(float(np.percentile(lat, 50)), 1),
            "p99_ms_of_200s": round(float(np.percentile(lat, 99)), 1)}  # fmt: skip


def _backend_rows(summary: dict, concurrency: list[int], best: str) -> list[dict]:
    """Each other backend of ours against the HF pipeline server, req/s and c=1 p50."""
    rows = []
    for name in summary:
        if name == best or not name.startswith("ours") or HF not in summary or "gRPC" in name:
            continue
        for c in concurrency:
            mine, base = summary[name][c], summary[HF][c]
            rows.append({"case": f"{name}, concurrency={c}", "metric": "req/s", "unit": "req/s",
                         "ours": round(mine["rps"], 1), "baseline": HF,
                         "baseline_value": round(base["rps"], 1),
                         "ratio": round(mine["rps"] / base["rps"], 3),
                         "ours_p50_ms": round(mine["p50"], 2),
                         "baseline_p50_ms": round(base["p50"], 2)})  # fmt: skip
    return rows


def _rows(summary: dict, concurrency: list[int], best: str, baselines: list[str]) -> list[dict]:
    rows = []
    ours = summary[best]
    for c in concurrency:
        for name in baselines:
            base = summary[name][c]
            rows.append({
                "case": f"concurrency={c}", "metric": "req/s", "unit": "req/s",
                "ours": round(ours[c]["rps"], 1), "baseline": name,
                "baseline_value": round(base["rps"], 1),
                "ratio": round(ours[c]["rps"] / base["rps"], 3),
                "ours_tokens_per_s": round(ours[c]["tokens_per_s"]),
                "ours_p50_ms": round(ours[c]["p50"], 2), "ours_p95_ms": round(ours[c]["p95"], 2),
                "ours_p99_ms": round(ours[c]["p99"], 2),
                "baseline_p50_ms": round(base["p50"], 2), "baseline_p99_ms": round(base["p99"], 2),
            })  # fmt: skip
    if 1 in concurrency:
        for name in baselines:
            base, mine = summary[name][1]["p50"], ours[1]["p50"]
            rows.append({"case": "concurrency=1", "metric": "p50 latency", "unit": "ms",
                         "ours": round(mine, 2), "baseline": name, "baseline_value": round(base, 2),
                         "ratio": round(base / mine, 3)})  # fmt: skip
    return rows + _backend_rows(summary, concurrency, best)


def plot(summary: dict, concurrency: list[int], path: Path, title: str) -> None:
    try:
        import matplotlib
    except ImportError:  # a lent GPU machine has no matplotlib: the JSON is the result there
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, data in summary.items():
        style = "o-" if label.startswith("ours") else "s--"
        a.plot(concurrency, [data[c]["rps"] for c in concurrency], style, label=label)
        b.plot(concurrency, [data[c]["p50"] for c in concurrency], style, label=label)
    a.set(xscale="log", xlabel="concurrent clients", ylabel="requests/s", title="Throughput")
    b.set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="p50 latency (ms)",
          title="Latency (p50)")  # fmt: skip
    for ax in (a, b):
        ax.set_xticks(concurrency, [str(c) for c in concurrency])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    a.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def measure(running: dict, names: list[str], best: str, args: argparse.Namespace,
            texts: list[str], lengths: list[int]) -> tuple[dict, dict]:  # fmt: skip
    """Each server in turn at each concurrency, ``args.reps`` times; the best also over gRPC."""
    results = {name: {c: [] for c in args.concurrency} for name in names}
    grpc: dict[int, list] = {c: [] for c in args.concurrency}
    offset = 0
    for c in args.concurrency:
        n = max(args.requests, 4 * c)
        for rep in range(args.reps):
            for name in names:
                url = running[name]["url"]
                asyncio.run(load_http(url, c, min(50, n), texts, lengths, offset))  # warm-up
                results[name][c].append(asyncio.run(load_http(url, c, n, texts, lengths, offset)))
            if not args.no_grpc:
                address = running[best]["grpc"]
                grpc[c].append(asyncio.run(load_grpc(address, c, n, texts, lengths, offset)))
            offset += n
            done = ", ".join(f"{m}: {results[m][c][-1]['rps']:.0f}" for m in names)
            print(f"c={c} rep={rep} (req/s): {done}", flush=True)
    return results, grpc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size", choices=sorted(SIZES), default="minilm", help="model size")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64],
                   help="concurrent clients")  # fmt: skip
    p.add_argument("--requests", type=int, default=300, help="requests per measurement")
    p.add_argument("--reps", type=int, default=2, help="interleaved repetitions")
    p.add_argument("--servers", nargs="+", default=None, help="a subset of the servers (names)")
    p.add_argument("--overload", type=int, default=1000, help="clients at once (0: skip)")
    p.add_argument("--no-grpc", action="store_true", help="skip the gRPC measurement")
    p.add_argument("--output", default=None, help="result name (default serve / serve-<gpu>)")
    p.add_argument("--output-dir", type=Path, default=RESULTS, help="where the JSON and PNG go")
    args = p.parse_args(argv)
    gpu = hardware()["gpu"]
    servers = GPU_SERVERS if gpu else SERVERS
    names = list(args.servers or servers)
    texts, source = reviews()
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = build_model(tmp, args.size, texts)
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        lengths = [
            len(ids) for ids in tokenizer(texts, truncation=True, max_length=SEQ)["input_ids"]
        ]
        prev = previous_checkout(tmp) if PREV in names else None
        gate = judge_variants(model_dir) if DEFAULT in names else None
        running: dict[str, dict] = {}
        failed: dict[str, str] = {}
        try:
            for i, name in enumerate(list(names)):
                path = prev if name == PREV else ROOT
                try:
                    running[name] = start(name, servers[name], model_dir, tmp / f"{i}.log", path)
                except RuntimeError as e:  # one server down must not lose the others' figures
                    failed[name] = f"{e}: {(tmp / f'{i}.log').read_text()[-1500:]}"
                    names.remove(name)
                    print(f"FAILED {name}: {failed[name]}", flush=True)
                    continue
                print(f"started {name}", flush=True)
            best = next(n for n in names if n.startswith("ours"))
            results, grpc = measure(running, names, best, args, texts, lengths)
            over = None
            if args.overload:
                over = asyncio.run(overload(running[best]["url"], args.overload, 2, texts))
                over["server_alive_after"] = process_alive(running[best]["pid"])
                print(f"overload: {over}", flush=True)
        finally:
            for server in running.values():
                stop_process(server["pid"])
    keys = ("rps", "tokens_per_s", "p50", "p95", "p99", "errors")
    summary = {
        name: {c: {k: median([r[k] for r in runs]) for k in keys} for c, runs in per.items()}
        for name, per in results.items()
    }
    if not args.no_grpc:
        summary[f"{best} over gRPC"] = {
            c: {k: median([r[k] for r in runs]) for k in keys} for c, runs in grpc.items()
        }
    baselines = [n for n in names if n != best]
    layers, hidden, heads = SIZES[args.size]
    name = args.output or ("serve" if not gpu else f"serve-{gpu.split()[-1]}")
    accuracy = RESULTS / "serve-accuracy.json"
    notes = (f"{args.size} ({layers} layers, hidden {hidden}), one {source} review per "
             f"request (mean {np.mean(lengths):.0f} tokens at seq {SEQ}); ratio = ours/baseline "
             f"(for latency: baseline/ours)")  # fmt: skip
    if over:
        notes += (f"; {over['clients']} clients at once: {over['200']} answered, {over['503']} "
                  f"503 with Retry-After, {over['other']} other errors, server alive: "
                  f"{over['server_alive_after']}")  # fmt: skip
    path = write_result(name, {
        "unit": "req/s", "higher_is_better": True,
        "rows": _rows(summary, args.concurrency, best, baselines),
        "detail": summary, "overload": over, "failed_to_start": failed, "variant_gate": gate,
        "accuracy": json.loads(accuracy.read_text())["rows"] if accuracy.exists() else None,
        "config": {"size": args.size, "layers": layers, "hidden": hidden, "heads": heads,
                   "seq_max": SEQ, "requests": args.requests, "reps": args.reps,
                   "mean_tokens": round(float(np.mean(lengths)), 1), "previous": PREVIOUS,
                   "texts": source},
        "notes": notes,
    }, args.output_dir)  # fmt: skip
    plot(summary, args.concurrency, args.output_dir / f"{name}.png",
         f"Serving {args.size}, real review lengths, {hardware()['cores']} cores"
         + (f", {gpu}" if gpu else ""))  # fmt: skip
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
