"""A global explanation: the words with the largest mean attribution per predicted star.

Each of up to ``rows`` test reviews is explained toward its predicted class with the predictor's
integrated gradients (``components/serve/explain.py``, fp32 weights); each word's attributions
(lower-cased) are averaged per predicted class over the reviews that contain it, and words seen
in fewer than ``min_count`` reviews of that class are left out (one review's quirk is not a
pattern). The result is a table per star and a PNG, kept with the evaluation and in MLflow.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from components.common.inference import Classifier  # noqa: E402
from components.common.text import clean_text  # noqa: E402
from components.serve.explain import IntegratedGradients, explain_texts, is_word  # noqa: E402

logger = logging.getLogger(__name__)


def top_words_per_class(explained: list[list[dict]], predicted: list[int], labels: list[str],
                        top: int = 8, min_count: int = 3) -> dict[str, list[dict]]:  # fmt: skip
    """Per class name: ``[{"word", "mean_attribution", "reviews"}, ...]``, largest mean first."""
    sums: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for words, cls in zip(explained, predicted, strict=True):
        per_review: dict[str, float] = defaultdict(float)
        for w in words:
            key = w["word"].lower()
            if is_word(key):  # punctuation is not a word to show
                per_review[key] += w["attribution"]
        for key, value in per_review.items():
            sums[cls][key].append(value)
    out = {}
    for i, name in enumerate(labels):
        rows = [{"word": w, "mean_attribution": float(np.mean(v)), "reviews": len(v)}
                for w, v in sums[i].items() if len(v) >= min_count]  # fmt: skip
        out[name] = sorted(rows, key=lambda r: (-r["mean_attribution"], r["word"]))[:top]
    return out


def global_explanation(model_dir: str | Path, texts: list[str], probs: np.ndarray,
                       labels: list[str], rows: int = 200, steps: int = 8,
                       seed: int = 0) -> dict:  # fmt: skip
    """Explain up to ``rows`` test reviews (a seeded sample) and aggregate per predicted class."""
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(texts), size=min(rows, len(texts)), replace=False))
    clf = Classifier(model_dir, device="cpu", precision="fp32")
    ig = IntegratedGradients(clf.model, clf.tokenizer)
    predicted = [int(probs[i].argmax()) for i in picked]
    explained = explain_texts(ig, [clean_text(texts[i]) for i in picked], predicted, steps,
                              clf.max_length)  # fmt: skip
    logger.info("global explanation: %d test reviews explained, %d steps each", len(picked), steps)
    return {"rows": len(picked), "steps": steps, "method": "integrated_gradients",
            "top_words": top_words_per_class(explained, predicted, labels)}  # fmt: skip


def plot_top_words(top_words: dict[str, list[dict]], path: Path) -> Path:
    """One horizontal bar chart per class of its top words."""
    names = list(top_words)
    fig, axes = plt.subplots(1, len(names), figsize=(3.0 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        rows = top_words[name][::-1]
        ax.barh([r["word"] for r in rows], [r["mean_attribution"] for r in rows], color="tab:blue")
        ax.set_title(f"predicted {name}" + (" stars" if name.isdigit() else ""))
        ax.tick_params(axis="y", labelsize=8)
        if not rows:
            ax.text(0.5, 0.5, "no word in enough reviews", ha="center", transform=ax.transAxes)
    fig.supxlabel("mean attribution toward the predicted class (integrated gradients)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
