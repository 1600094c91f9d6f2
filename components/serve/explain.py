"""Why a review got its stars: integrated gradients on the word embeddings, merged to words.

Integrated gradients (Sundararajan et al., 2017) attributes the change in the target class's
probability between a baseline input and the review to each input position: the path integral
of the gradient along the straight line from the baseline's embeddings to the review's, times
the embedding difference, summed over the hidden dimension. The baseline keeps ``[CLS]`` and
``[SEP]`` and replaces every other token by ``[PAD]`` (same length, same positions), so the
attributions of a review sum to ``p(review) - p(baseline)`` up to the integral's discretisation
error, which each answer reports (``completeness_gap``).

Why this method rather than SHAP's text explainer: IG needs ``steps`` forward+backward passes
over one sequence, batched over the steps (16 by default, one or two batches for a review of
64 tokens); SHAP's partition explainer needs hundreds of forward passes per review to converge
on the same sequence. On 2 CPU cores that is the difference between an explanation in a
fraction of a second and one in several seconds. IG's faithfulness is not assumed: the deletion
benchmark (``benchmarks/explain.py``) measures it on real reviews against deleting random words.

Work is cut into chunks of at most ``max_batch_tokens`` interpolated token positions; the
predictor runs each chunk on its forward thread between prediction batches (predictions first,
see :class:`components.serve.batching.TokenBudgetBatcher`), so an explanation never holds the
model for longer than one chunk.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from components.common.errors import ConfigurationError, InvalidInput

logger = logging.getLogger(__name__)

METHOD = "integrated_gradients"
BASELINE = "[PAD] for every token but [CLS] and [SEP]"
TOP_WORDS = 5


@dataclass(frozen=True)
class ExplainLimits:
    """What one ``:explain`` request may ask for (a 4xx beyond)."""

    max_instances: int = 8
    max_steps: int = 64
    default_steps: int = 16

    def __post_init__(self) -> None:
        if self.max_instances < 1 or not 1 <= self.default_steps <= self.max_steps:
            raise ConfigurationError(
                f"explain limits: need max_instances >= 1 and 1 <= default steps "
                f"({self.default_steps}) <= max steps ({self.max_steps})"
            )


@dataclass(frozen=True)
class ExplainOptions:
    """The validated ``parameters`` of an explain request."""

    steps: int
    target: str | None = None  # a label name; None: the predicted class


def explain_options(
    parameters: Any, labels: Sequence[str], limits: ExplainLimits
) -> ExplainOptions:
    """``{"steps": 16, "target": "1"}`` (both optional) to options, or InvalidInput."""
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        raise InvalidInput(f'"parameters" must be an object, got {type(parameters).__name__}')
    unknown = sorted(set(parameters) - {"steps", "target"})
    if unknown:
        raise InvalidInput(f"unknown explain parameters {unknown}; allowed: steps, target")
    steps = parameters.get("steps", limits.default_steps)
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise InvalidInput(f'"steps" must be an integer, got {steps!r}')
    if not 1 <= steps <= limits.max_steps:
        raise InvalidInput(f'"steps" is {steps}; allowed: 1 to {limits.max_steps}')
    target = parameters.get("target")
    if target is not None:
        target = str(target)
        if target not in labels:
            raise InvalidInput(f'"target" {target!r} is not a label; labels: {", ".join(labels)}')
    return ExplainOptions(steps, target)


@dataclass(frozen=True)
class Encoded:
    """One cleaned text as the model sees it: token ids and the word each token belongs to."""

    text: str
    input_ids: list[int]
    word_spans: list[tuple[int, int] | None]  # per token: the word's character span, or None
    truncated: bool


def encode_words(tokenizer: Any, text: str, max_length: int) -> Encoded:
    """Token ids (truncated as the predictor truncates) and each token's word span in ``text``.

    Word pieces of one word (``wire``, ``##less``) share its span; special tokens have none.
    """
    enc = tokenizer(text, truncation=True, max_length=max_length, return_offsets_mapping=True,
                    return_attention_mask=False, return_token_type_ids=False)  # fmt: skip
    full = len(tokenizer(text, add_special_tokens=True, return_attention_mask=False)["input_ids"])
    word_ids = enc.word_ids()
    spans: dict[int, tuple[int, int]] = {}
    for wid, (start, end) in zip(word_ids, enc["offset_mapping"], strict=True):
        if wid is not None:
            lo, hi = spans.get(wid, (start, end))
            spans[wid] = (min(lo, start), max(hi, end))
    per_token = [None if w is None else spans[w] for w in word_ids]
    return Encoded(text, list(enc["input_ids"]), per_token, full > len(enc["input_ids"]))


def merge_words(encoded: Encoded, token_scores: np.ndarray) -> list[dict]:
    """Token attributions summed per word, in text order: ``[{"word", "attribution"}, ...]``."""
    words: dict[tuple[int, int], float] = {}
    for span, value in zip(encoded.word_spans, token_scores, strict=True):
        if span is not None:
            words[span] = words.get(span, 0.0) + float(value)
    return [{"word": encoded.text[a:b], "attribution": v}
            for (a, b), v in sorted(words.items())]  # fmt: skip


def is_word(text: str) -> bool:
    """A word to show: at least one letter or digit (not punctuation alone)."""
    return any(c.isalnum() for c in text)


def top_words(words: list[dict], k: int = TOP_WORDS) -> list[str]:
    """The ``k`` words that pushed most toward the target (positive attributions only).

    Punctuation is left out here (it stays in the attributions): a labeller reads these.
    """
    ranked = sorted((w for w in words if w["attribution"] > 0 and is_word(w["word"])),
                    key=lambda w: -w["attribution"])  # fmt: skip
    return [w["word"] for w in ranked[:k]]


@dataclass
class Attribution:
    """Integrated gradients of one sequence toward one class, accumulated chunk by chunk."""

    input_ids: list[int]
    target: int
    steps: int
    grad_sum: np.ndarray | None = None
    delta: np.ndarray | None = None  # embeddings: review minus baseline, [L, H]
    probability: float = 0.0  # target probability of the review (explaining model)
    baseline_probability: float = 0.0
    done_steps: int = 0
    chunks: list[tuple[int, int]] = field(default_factory=list)

    @property
    def token_scores(self) -> np.ndarray:
        """Per-token attribution: (x - x') . mean gradient along the path."""
        return (self.delta * (self.grad_sum / self.steps)).sum(axis=1)

    @property
    def completeness_gap(self) -> float:
        """sum(attributions) - (p(x) - p(x')): 0 for the exact integral."""
        return float(self.token_scores.sum() - (self.probability - self.baseline_probability))


class IntegratedGradients:
    """Integrated gradients for a Hugging Face sequence classifier (fp32 weights)."""

    def __init__(self, model: Any, tokenizer: Any, max_batch_tokens: int = 4096) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_tokens = max_batch_tokens
        self.pad_id = tokenizer.pad_token_id or 0
        self.special = set(tokenizer.all_special_ids)
        self.device = next(model.parameters()).device

    def baseline_ids(self, input_ids: Sequence[int]) -> list[int]:
        return [t if t in self.special else self.pad_id for t in input_ids]

    def plan(self, input_ids: list[int], target: int, steps: int) -> Attribution:
        """An attribution to fill, cut into chunks of at most ``max_batch_tokens`` positions."""
        per_chunk = max(1, self.max_batch_tokens // max(len(input_ids), 1))
        chunks = [(s, min(s + per_chunk, steps)) for s in range(0, steps, per_chunk)]
        return Attribution(input_ids, target, steps, chunks=chunks)

    def chunk_jobs(self, attribution: Attribution) -> list[Callable[[], None]]:
        """One callable per chunk, to run in order on the model's thread."""
        return [lambda lo=lo, hi=hi: self.run_chunk(attribution, lo, hi)
                for lo, hi in attribution.chunks]  # fmt: skip

    def run_chunk(self, a: Attribution, lo: int, hi: int) -> None:
        """Gradients at the midpoints ``(k + 0.5) / steps`` for k in [lo, hi)."""
        embed = self.model.get_input_embeddings()
        ids = torch.tensor([a.input_ids, self.baseline_ids(a.input_ids)], device=self.device)
        with torch.no_grad():
            x, base = embed(ids).float()
            if a.delta is None:  # first chunk: the two end points of the path
                probs = self._probs(torch.stack([x, base]))[:, a.target]
                a.probability, a.baseline_probability = (float(p) for p in probs)
                a.delta = (x - base).cpu().numpy()
                a.grad_sum = np.zeros_like(a.delta)
        alphas = (torch.arange(lo, hi, dtype=torch.float32, device=self.device) + 0.5) / a.steps
        path = (base + alphas[:, None, None] * (x - base)).requires_grad_(True)
        with torch.enable_grad():
            probs = self._probs(path)
            (grads,) = torch.autograd.grad(probs[:, a.target].sum(), path)
        a.grad_sum += grads.sum(dim=0).cpu().numpy()
        a.done_steps += hi - lo

    def _probs(self, embeds: torch.Tensor) -> torch.Tensor:
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=self.device)
        logits = self.model(inputs_embeds=embeds, attention_mask=mask).logits
        return torch.softmax(logits.float(), dim=-1)

    def attribute(self, input_ids: list[int], target: int, steps: int) -> Attribution:
        """The whole attribution at once, on the calling thread (tests, benchmarks, evaluate)."""
        a = self.plan(input_ids, target, steps)
        for job in self.chunk_jobs(a):
            job()
        return a


def explain_texts(ig: IntegratedGradients, texts: list[str], targets: list[int], steps: int,
                  max_length: int) -> list[list[dict]]:  # fmt: skip
    """Word attributions for cleaned ``texts`` toward ``targets`` (synchronously)."""
    out = []
    for text, target in zip(texts, targets, strict=True):
        encoded = encode_words(ig.tokenizer, text, max_length)
        out.append(
            merge_words(encoded, ig.attribute(encoded.input_ids, target, steps).token_scores)
        )
    return out
