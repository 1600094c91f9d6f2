"""Are the explanations faithful, and what does one cost? Deletion test and latency on 2 cores.

Faithfulness (deletion test): for each of ``--reviews`` real Electronics test reviews, the
predictor's explainer (integrated gradients, ``components/serve/explain.py``) attributes the
predicted class's probability to words; then the ``k`` most positively attributed words are
deleted from the text and the predicted class's probability is measured again. The named
baseline, in the same run on the same reviews: deleting ``k`` words drawn at random (the mean
of ``--draws`` draws). Words are those the model sees (inside its 64-token window), for both,
so a random draw never "deletes" a word the model had already cut off. A faithful explanation
lowers the probability more than the random deletion: recorded per ``k`` with the paired
bootstrap interval of the difference, and the share of reviews where the top-k deletion hurt
more.

Latency: one explanation (``--steps`` integration steps, one chunk of the predictor's default
size at a time) of a review of median length and of one filling the 64-token window, against
one prediction of the same review (batch of 1): medians of ``--repeats`` interleaved runs.

The model: the quality benchmark's ``minilm`` case (pretrained all-MiniLM-L6-v2 fine-tuned by
our train step on the 8,000 real Electronics training reviews), one epoch here; or an already
fine-tuned save_pretrained directory with ``--model-dir`` and ``--data`` (the ingest output
its test split comes from). Writes results/explain.json and results/explain.png.

``python -m benchmarks.explain`` (``make bench-explain``): about 4 minutes of training plus 3
of measuring on 2 cores. ``--quick`` for a dry run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from benchmarks.common import RESULTS, median, write_result  # noqa: E402

KS = (1, 3, 5)

# probabilities [n, classes] for a list of texts
Predict = Callable[[list[str]], np.ndarray]


def delete_words(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` without the character ``spans`` (whole words), spaces collapsed."""
    kept, last = [], 0
    for start, end in sorted(spans):
        kept.append(text[last:start])
        last = end
    kept.append(text[last:])
    return " ".join("".join(kept).split())


def word_spans(words: list[dict], encoded_spans: list) -> list[tuple[int, int]]:
    """The character span of each attributed word, in the order of ``words``."""
    spans = sorted({s for s in encoded_spans if s is not None})
    if len(spans) != len(words):
        raise ValueError(f"{len(words)} words but {len(spans)} spans")
    return spans


def deletion_drops(predict: Predict, texts: list[str], targets: list[int],
                   attributions: list[list[float]], spans: list[list[tuple[int, int]]],
                   ks: tuple[int, ...], draws: int, seed: int = 0) -> dict[int, dict]:  # fmt: skip
    """Per k: the target's probability drop after deleting the top-k words vs k random words.

    A review takes part for a given k when it has more than k words and at least k positive
    attributions; ``top`` and ``random`` are per-review drops (random: mean over ``draws``).
    """
    rng = np.random.default_rng(seed)
    before = predict(texts)[np.arange(len(texts)), targets]
    out = {}
    for k in ks:
        rows, top_texts, random_texts = [], [], []
        for i, (text, scores, sp) in enumerate(zip(texts, attributions, spans, strict=True)):
            order = np.argsort(-np.asarray(scores), kind="stable")
            if len(sp) <= k or sum(s > 0 for s in scores) < k:
                continue
            rows.append(i)
            top_texts.append(delete_words(text, [sp[j] for j in order[:k]]))
            for _ in range(draws):
                picked = rng.choice(len(sp), size=k, replace=False)
                random_texts.append(delete_words(text, [sp[j] for j in picked]))
        if not rows:
            out[k] = {"reviews": 0, "top": [], "random": []}
            continue
        idx = np.asarray(rows)
        target = np.asarray(targets)[idx]
        top_p = predict(top_texts)[np.arange(len(idx)), target]
        rand_p = predict(random_texts)[np.arange(len(idx) * draws), np.repeat(target, draws)]
        out[k] = {
            "reviews": len(idx),
            "top": (before[idx] - top_p).tolist(),
            "random": (before[idx] - rand_p.reshape(len(idx), draws).mean(axis=1)).tolist(),
        }
    return out


def paired_interval(a: np.ndarray, b: np.ndarray, resamples: int = 2000,
                    seed: int = 0) -> tuple[float, float, float]:  # fmt: skip
    """Mean of ``a - b`` and its bootstrap 95% interval (resampling reviews)."""
    diff = np.asarray(a) - np.asarray(b)
    rng = np.random.default_rng(seed)
    means = rng.choice(diff, size=(resamples, len(diff)), replace=True).mean(axis=1)
    return float(diff.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def explain_reviews(model_dir: Path, texts: list[str], steps: int) -> dict:
    """Cleaned texts, predicted classes, word attributions and word spans (fp32 PyTorch)."""
    from components.common.inference import Classifier
    from components.common.text import clean_text
    from components.serve.explain import IntegratedGradients, encode_words, merge_words

    clf = Classifier(model_dir, device="cpu", precision="fp32")
    ig = IntegratedGradients(clf.model, clf.tokenizer)
    cleaned = [clean_text(t) for t in texts]
    probs = clf.probabilities(cleaned).numpy()
    targets = probs.argmax(axis=1).tolist()
    attributions, spans, gaps = [], [], []
    for text, target in zip(cleaned, targets, strict=True):
        enc = encode_words(clf.tokenizer, text, clf.max_length)
        a = ig.attribute(enc.input_ids, target, steps)
        words = merge_words(enc, a.token_scores)
        attributions.append([w["attribution"] for w in words])
        spans.append(word_spans(words, enc.word_spans))
        gaps.append(abs(a.completeness_gap))
    return {"classifier": clf, "texts": cleaned, "targets": targets, "attributions": attributions,
            "spans": spans, "completeness_gaps": gaps}  # fmt: skip


def predictor(clf: object, batch: int = 64) -> Predict:
    def predict(texts: list[str]) -> np.ndarray:
        parts = [clf.probabilities(texts[i : i + batch]).numpy()
                 for i in range(0, len(texts), batch)]  # fmt: skip
        return np.concatenate(parts)

    return predict


def latency(clf: object, texts: dict[str, str], steps: int, repeats: int) -> list[dict]:
    """Median seconds of one explanation vs one prediction of the same review, interleaved."""
    from components.serve.explain import IntegratedGradients, encode_words

    ig = IntegratedGradients(clf.model, clf.tokenizer, max_batch_tokens=512)
    rows = []
    for case, text in texts.items():
        enc = encode_words(clf.tokenizer, text, clf.max_length)
        explain_s, predict_s = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            ig.attribute(enc.input_ids, 0, steps)
            explain_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            clf.probabilities([text])
            predict_s.append(time.perf_counter() - t)
        rows.append({"case": f"{case} ({len(enc.input_ids)} tokens), {steps} steps",
                     "metric": "latency", "unit": "s", "ours": round(median(explain_s), 4),
                     "baseline": "one prediction of the same review (batch 1)",
                     "baseline_value": round(median(predict_s), 4),
                     "ratio": round(median(explain_s) / median(predict_s), 2)})  # fmt: skip
    return rows


def faithfulness_rows(drops: dict[int, dict]) -> list[dict]:
    rows = []
    for k, d in drops.items():
        if not d["reviews"]:
            continue
        top, rand = np.asarray(d["top"]), np.asarray(d["random"])
        diff, low, high = paired_interval(top, rand)
        rows.append({"case": f"delete top-{k} words ({d['reviews']} reviews)",
                     "metric": "drop in the predicted class's probability", "unit": "probability",
                     "higher_is_better": True, "ours": round(float(top.mean()), 4),
                     "baseline": f"delete {k} random words",
                     "baseline_value": round(float(rand.mean()), 4),
                     "ratio": round(float(top.mean() / rand.mean()), 2) if rand.mean() else None,
                     "difference": f"{diff:+.4f} [{low:+.4f}, {high:+.4f}]",
                     "share_top_hurts_more": round(float((top > rand).mean()), 4)})  # fmt: skip
    return rows


def plot(drops: dict[int, dict], latency_rows: list[dict], path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    ks = [k for k, d in drops.items() if d["reviews"]]
    x = np.arange(len(ks))
    for offset, key, label in ((-0.2, "top", "top-k attributed words"),
                               (0.2, "random", "k random words (baseline)")):  # fmt: skip
        means = [np.mean(drops[k][key]) for k in ks]
        errs = [np.std(drops[k][key]) / np.sqrt(len(drops[k][key])) for k in ks]
        left.bar(x + offset, means, 0.4, yerr=errs, label=label, capsize=3)
    left.set(xticks=x, xticklabels=[f"k={k}" for k in ks], ylabel="mean drop in p(predicted)",
             title="Deletion test on real Electronics reviews")  # fmt: skip
    left.legend()
    cases = [r["case"].split(",")[0] for r in latency_rows]
    y = np.arange(len(cases))
    right.barh(y - 0.2, [r["ours"] * 1000 for r in latency_rows], 0.4, label="explanation")
    right.barh(y + 0.2, [r["baseline_value"] * 1000 for r in latency_rows], 0.4,
               label="prediction (baseline)")  # fmt: skip
    right.set(yticks=y, yticklabels=cases, xlabel="ms (median)", title="Latency on this CPU")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def prepare_model(args: argparse.Namespace, work: Path) -> tuple[Path, Path, float | None]:
    """The model and data to explain: given, or fine-tuned here like the quality benchmark."""
    if args.model_dir:
        return args.model_dir, args.data, None
    from benchmarks.quality import Case, prepare_electronics, train_case

    data = prepare_electronics(work, args.quick)
    (work / "train").mkdir()
    case = Case("minilm", "electronics", epochs=args.epochs)
    model_dir, seconds = train_case(case, data, work / "train", args.nproc, args.quick)
    if args.keep:
        shutil.copytree(model_dir, args.keep / "model", dirs_exist_ok=True)
        shutil.copytree(data, args.keep / "data", dirs_exist_ok=True)
    return model_dir, data, seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--model-dir", type=Path, default=None, help="fine-tuned model to explain")
    p.add_argument("--data", type=Path, default=None, help="with --model-dir: its ingest output")
    p.add_argument("--keep", type=Path, default=None, help="copy the trained model and data here")
    p.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs when training here")
    p.add_argument("--nproc", type=int, default=2, help="training processes")
    p.add_argument("--reviews", type=int, default=200, help="test reviews in the deletion test")
    p.add_argument("--steps", type=int, default=16, help="integration steps per explanation")
    p.add_argument("--draws", type=int, default=3, help="random deletions per review and k")
    p.add_argument("--repeats", type=int, default=15, help="latency repetitions")
    p.add_argument("--quick", action="store_true", help="a few rows and steps (dry run)")
    p.add_argument("--output", type=Path, default=RESULTS, help="where explain.json/png go")
    args = p.parse_args(argv)
    if args.model_dir and not args.data:
        p.error("--model-dir needs --data (the ingest output with test/)")
    if args.quick:
        args.reviews, args.repeats, args.steps = min(args.reviews, 20), 3, 4
    work = Path(tempfile.mkdtemp(prefix="bench-explain-"))
    try:
        model_dir, data, train_seconds = prepare_model(args, work)
        test = pd.read_parquet(data / "test")
        sample = test.sample(n=min(args.reviews, len(test)), random_state=42)
        t = time.perf_counter()
        ex = explain_reviews(model_dir, sample["review_body"].tolist(), args.steps)
        explain_seconds = time.perf_counter() - t
        drops = deletion_drops(predictor(ex["classifier"]), ex["texts"], ex["targets"],
                               ex["attributions"], ex["spans"], KS, args.draws)  # fmt: skip
        lengths = [len(s) for s in ex["spans"]]
        by_len = sorted(range(len(lengths)), key=lambda i: lengths[i])
        cases = {"median review": ex["texts"][by_len[len(by_len) // 2]],
                 "longest review": ex["texts"][by_len[-1]]}  # fmt: skip
        latency_rows = latency(ex["classifier"], cases, args.steps, args.repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = faithfulness_rows(drops) + latency_rows
    trained = Path(model_dir) / "results.json"  # the train step's record of the model
    training = json.loads(trained.read_text()) if trained.exists() else None
    args.output.mkdir(parents=True, exist_ok=True)
    name = "explain-quick" if args.quick else "explain"
    path = write_result(
        name,
        {"unit": "mixed", "higher_is_better": None, "rows": rows,
         "deletion": {str(k): d for k, d in drops.items()},
         "completeness_gap_median": round(median(ex["completeness_gaps"]), 5),
         "notes": "faithfulness: deleting the top-k attributed words vs k random words (mean of "
                  f"{args.draws} draws) from the same {len(sample)} real Electronics test "
                  "reviews; latency measured while other work shared the 2 cores "
                  "(load_average_1m_at_end in config)",
         "training": training,
         "config": {"model": str(model_dir) if args.model_dir else "all-MiniLM-L6-v2 fine-tuned",
                    "epochs": None if args.model_dir else args.epochs, "reviews": len(sample),
                    "steps": args.steps, "draws": args.draws, "seq": 64, "method":
                    "integrated_gradients", "train_seconds": train_seconds,
                    "explain_seconds_total": round(explain_seconds, 1), "quick": args.quick,
                    # other work on the machine shows here (latency is measured, not isolated)
                    "load_average_1m_at_end": round(os.getloadavg()[0], 2)}},
        args.output,
    )  # fmt: skip
    plot(drops, latency_rows, args.output / f"{name}.png")
    for row in rows:
        print(json.dumps(row))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
