"""The predictor's side of explanations: ``:explain`` answers and the capture's top words.

The attributions are :mod:`components.serve.explain`'s integrated gradients; here they are
scheduled on the predictor's batcher (one chunk at a time on the forward thread, behind waiting
predictions; the capture's top words only when the model is idle), bounded (texts, steps,
explanations in flight) and put into the answer's shape. The weights explained are the served
ones when they are fp32 PyTorch, otherwise the fp32 PyTorch weights of the same model directory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from kserve.errors import InvalidInput

from components.common.errors import ConfigurationError
from components.common.errors import InvalidInput as PlatformInvalidInput
from components.common.inference import Classifier
from components.common.text import clean_text
from components.serve.backends import Backend, TorchBackend
from components.serve.batching import Overloaded, TokenBudgetBatcher
from components.serve.explain import (
    BASELINE,
    METHOD,
    Attribution,
    Encoded,
    ExplainLimits,
    IntegratedGradients,
    encode_words,
    explain_options,
    merge_words,
    top_words,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExplainConfig:
    """The predictor's ``:explain`` verb and the capture's top words."""

    enabled: bool = True
    limits: ExplainLimits = field(default_factory=ExplainLimits)
    max_concurrent: int = 4  # explain requests in flight; beyond, 503 with Retry-After
    chunk_tokens: int = 512  # interpolated token positions per chunk on the forward thread
    capture_below: float = 0.7  # logged predictions below this confidence carry top words
    capture_steps: int = 8
    model_version: str = ""

    def __post_init__(self) -> None:
        if self.max_concurrent < 1 or self.chunk_tokens < 1 or not 0 <= self.capture_below <= 1:
            raise ConfigurationError(
                "explain: need max_concurrent >= 1, chunk_tokens >= 1 and capture_below in [0, 1]"
            )


def explaining_model(backend: Backend) -> tuple[torch.nn.Module, str]:
    """The weights to explain and their name: the served ones, or their fp32 PyTorch twin.

    ONNX, int8 and bf16 variants are explained on the fp32 PyTorch weights of the same model
    directory (ONNX Runtime computes no gradients, and bf16 gradients are too coarse).
    """
    if isinstance(backend, TorchBackend) and backend.classifier.dtype == torch.float32:
        return backend.model, backend.name
    device = getattr(backend, "device", None)
    fp32 = Classifier(backend.classifier.model_dir, device=str(device or "cpu"),
                      max_length=backend.max_length, precision="fp32")  # fmt: skip
    return fp32.model, f"torch-float32-{fp32.device.type}"


class Explainer:
    """Explanations for one loaded backend, run through its batcher."""

    def __init__(self, backend: Backend, batcher: TokenBudgetBatcher, config: ExplainConfig,
                 tokenize_pool: ThreadPoolExecutor) -> None:  # fmt: skip
        self.backend = backend
        self.batcher = batcher
        self.config = config
        self.tokenize_pool = tokenize_pool
        model, self.explained_with = explaining_model(backend)
        self.ig = IntegratedGradients(model, backend.tokenizer, config.chunk_tokens)
        self.in_flight = 0
        logger.info("explanations: %s on %s (served: %s)", METHOD, self.explained_with,
                    backend.name)  # fmt: skip

    async def explain(self, texts: list[str], parameters: object,
                      probabilities: Callable, prediction: Callable) -> dict:  # fmt: skip
        """The ``:explain`` answer for ``texts``.

        ``probabilities`` is the served variant's (through the shared queue), ``prediction``
        turns one row of it into the V1 fields.
        """
        limits, labels = self.config.limits, self.backend.labels
        if len(texts) > limits.max_instances:
            raise InvalidInput(f'"instances" has {len(texts)} items; an explain request takes '
                               f"at most {limits.max_instances}")  # fmt: skip
        try:
            options = explain_options(parameters, labels, limits)
        except PlatformInvalidInput as e:  # KServe answers 400 for its own InvalidInput only
            raise InvalidInput(str(e)) from e
        if self.in_flight >= self.config.max_concurrent:
            raise Overloaded(self.in_flight, self.config.max_concurrent,
                             self.batcher.retry_after(), "explanations")  # fmt: skip
        self.in_flight += 1
        try:
            probs = await probabilities(texts)
            explanations = []
            for enc, row in zip(await self.encode(texts), probs, strict=True):
                target = labels.index(options.target) if options.target else int(row.argmax())
                a = await self.attribute(enc, target, options.steps)
                words = merge_words(enc, a.token_scores)
                explanations.append({
                    **prediction(row), "target": labels[target],
                    "target_probability": a.probability,
                    "baseline_probability": a.baseline_probability,
                    "completeness_gap": a.completeness_gap, "attributions": words,
                    "top_words": top_words(words), "tokens": len(enc.input_ids),
                    "truncated": enc.truncated,
                })  # fmt: skip
        finally:
            self.in_flight -= 1
        return {
            "explanations": explanations, "method": METHOD, "steps": options.steps,
            "baseline": BASELINE, "served_variant": self.backend.name,
            "explained_with": self.explained_with,
            "explained_on_served_variant": self.explained_with == self.backend.name,
            "model_version": self.config.model_version or None,
        }  # fmt: skip

    async def top_words_of(self, text: str, target: int) -> list[str]:
        """The capture's top words of one prediction, computed only when the model is idle."""
        (encoded,) = await self.encode([text])
        a = await self.attribute(encoded, target, self.config.capture_steps, idle_only=True)
        return top_words(merge_words(encoded, a.token_scores))

    async def encode(self, texts: list[str]) -> list[Encoded]:
        """Clean and tokenize with word spans, on the tokenizer thread."""
        tokenizer, max_length = self.backend.tokenizer, self.backend.max_length
        return await asyncio.get_running_loop().run_in_executor(
            self.tokenize_pool,
            lambda: [encode_words(tokenizer, clean_text(t), max_length) for t in texts],
        )

    async def attribute(self, encoded: Encoded, target: int, steps: int,
                        idle_only: bool = False) -> Attribution:  # fmt: skip
        """Integrated gradients, one chunk at a time on the batcher's forward thread."""
        a = self.ig.plan(encoded.input_ids, target, steps)
        for job in self.ig.chunk_jobs(a):
            await self.batcher.run_job(job, idle_only)
        return a


def low_confidence(predictions: list[dict], below: float) -> list[int]:
    """Indices of the predictions whose confidence is below ``below``."""
    return [i for i, p in enumerate(predictions) if p["score"] < below]
