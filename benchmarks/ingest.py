"""Ingest benchmark: our Spark job vs the book's single-process pandas path, side by side.

For each size, generated raw data is ingested by both, interleaved, ``--reps`` times; we record
the median wall time, rows/s and peak memory of the whole process tree (the JVM included) and
where Spark's time goes (its own stage timings). Writes results/ingest.json and ingest.png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.common import RESULTS, median, run_measured, write_result  # noqa: E402
from pipelines.generate import GeneratorConfig, generate  # noqa: E402

BASELINE = "pandas single-process (book path)"


def bench_size(rows: int, reps: int, cache: Path) -> dict:
    raw = cache / f"raw-{rows}"
    if not (raw / "_generator_manifest.json").exists():
        generate(GeneratorConfig(rows=rows, seed=42), raw)
    ours, base, timings = [], [], []
    for rep in range(reps):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "spark"
            ours.append(
                run_measured(
                    [
                        sys.executable,
                        "-m",
                        "components.ingest",
                        "--input",
                        str(raw),
                        "--output",
                        str(out),
                    ]
                )
            )
            stats = json.loads((out / "stats.json").read_text())
            timings.append(stats["timings_s"])
            cleaner = stats["text_cleaner"]
            base.append(
                run_measured(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.pandas_ingest",
                        "--input",
                        str(raw),
                        "--output",
                        str(Path(tmp) / "pandas"),
                    ]
                )
            )
        spark, pandas = ours[-1], base[-1]
        print(
            f"rows={rows} rep={rep}: spark {spark.wall_s:.1f}s {spark.peak_memory_mb:.0f}MB | "
            f"pandas {pandas.wall_s:.1f}s {pandas.peak_memory_mb:.0f}MB",
            flush=True,
        )
    stage_medians = {k: median([t[k] for t in timings]) for k in timings[0]}
    return {
        "rows": rows,
        "ours_wall_s": median([m.wall_s for m in ours]),
        "baseline_wall_s": median([m.wall_s for m in base]),
        "ours_peak_mb": median([m.peak_memory_mb for m in ours]),
        "baseline_peak_mb": median([m.peak_memory_mb for m in base]),
        "spark_stage_s": stage_medians,
        "spark_text_cleaner": cleaner,
    }


def plot(results: list[dict], path: Path) -> None:
    rows = [r["rows"] for r in results]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(rows, [r["ours_wall_s"] for r in results], "o-", label="Spark job (ours)")
    a.plot(rows, [r["baseline_wall_s"] for r in results], "s--", label=BASELINE)
    a.set(xscale="log", yscale="log", xlabel="rows", ylabel="wall time (s)", title="Time")
    b.plot(rows, [r["ours_peak_mb"] for r in results], "o-", label="Spark job (ours)")
    b.plot(rows, [r["baseline_peak_mb"] for r in results], "s--", label=BASELINE)
    b.set(xscale="log", xlabel="rows", ylabel="peak PSS of process tree (MB)", title="Memory")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Ingest: raw TSV.gz to balanced, split Parquet")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[100_000, 1_000_000, 2_000_000, 5_000_000],
        help="row counts",
    )
    parser.add_argument(
        "--reps", type=int, default=3, help="repetitions per size (median reported)"
    )
    parser.add_argument("--cache", default=".local/bench", help="where generated data is kept")
    args = parser.parse_args(argv)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    results = [
        bench_size(rows, args.reps if rows <= 1_000_000 else max(1, args.reps - 1), cache)
        for rows in args.sizes
    ]
    table = []
    for r in results:
        table.append(
            {
                "case": f"rows={r['rows']}",
                "metric": "rows_per_s",
                "unit": "rows/s",
                "higher_is_better": True,
                "ours": round(r["rows"] / r["ours_wall_s"]),
                "baseline": BASELINE,
                "baseline_value": round(r["rows"] / r["baseline_wall_s"]),
                "ratio": round(r["baseline_wall_s"] / r["ours_wall_s"], 3),
            }
        )
        table.append(
            {
                "case": f"rows={r['rows']}",
                "metric": "peak_memory",
                "unit": "MB",
                "higher_is_better": False,
                "ours": round(r["ours_peak_mb"]),
                "baseline": BASELINE,
                "baseline_value": round(r["baseline_peak_mb"]),
                "ratio": round(r["ours_peak_mb"] / r["baseline_peak_mb"], 3),
            }
        )
    path = write_result(
        "ingest", {"unit": "rows/s", "higher_is_better": True, "rows": table, "detail": results}
    )
    plot(results, RESULTS / "ingest.png")
    print(f"wrote {path} and {RESULTS / 'ingest.png'}")
    shutil.rmtree(cache / "tmp", ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
