"""Token-budget batching: concurrent requests share forward passes, padded only within a bucket.

Requests arrive already tokenized (token ids per text). One collector task runs batches one
after another, as Hugging Face's text-embeddings-inference does: as soon as the model is free
it takes the waiting requests in arrival order until ``max_batch_tokens`` real tokens or
``max_batch_size`` texts, with no wait timer (an idle model starts on a lone request at once;
under load, whatever queued while the previous batch ran forms the next one). Inside a batch
the texts are sorted by length and cut into buckets (:func:`plan_buckets`), each padded only
to its own longest text: short reviews never pay for a long one. (TEI's queue,
huggingface/text-embeddings-inference core/src/queue.rs, takes entries the same way, skips
those whose client is gone, and for padded models counts padded tokens against the budget;
we count real tokens, since the buckets keep the padding small.)

The queue is bounded: past ``max_queue`` waiting texts a request is refused at once with
:class:`Overloaded` (HTTP 503 with a Retry-After estimated from the recent throughput) instead
of waiting without limit. A request whose client went away (its task cancelled, see
:mod:`components.serve.disconnect`) is dropped before its forward pass.

Background jobs (an explanation's chunks of integrated gradients) share the same forward thread
through :meth:`TokenBudgetBatcher.run_job`, behind the predictions: a job runs when no
prediction waits, or after ``jobs_every`` prediction batches in a row if jobs wait too, so a
prediction never waits for more than one job and jobs still progress under full load. Jobs
submitted with ``idle_only`` (the capture's top words of low-confidence predictions) run only
when nothing else waits: they never cost a prediction anything. At most ``max_jobs`` jobs of
each kind wait; beyond, :class:`Overloaded`.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from kserve.errors import ServerNotReady
from prometheus_client import Counter, Gauge, Histogram

from components.serve.buckets import pad, plan_buckets

BATCH_SIZE = Histogram(
    "review_classifier_batch_size",
    "Texts per batch of the token-budget batcher",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
BATCH_TOKENS = Histogram(
    "review_classifier_batch_tokens",
    "Real (unpadded) tokens per batch of the token-budget batcher",
    buckets=(16, 64, 256, 1024, 2048, 4096, 8192, 16384),
)
QUEUE_SECONDS = Histogram(
    "review_classifier_queue_seconds",
    "Time a request waited in the batch queue before its forward pass",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
BATCHES = Counter("review_classifier_batches", "Batches run by the token-budget batcher")
FORWARDS = Counter("review_classifier_forward_passes", "Forward passes (one per length bucket)")
PADDED_TOKENS = Counter(
    "review_classifier_padded_tokens", "Token positions computed, padding included"
)
REAL_TOKENS = Counter("review_classifier_real_tokens", "Token positions that hold a real token")
REJECTED = Counter("review_classifier_rejected", "Requests refused with 503 (queue full)")
CANCELLED = Counter(
    "review_classifier_cancelled", "Requests dropped before their forward pass (client gone)"
)
QUEUED = Gauge("review_classifier_queued_texts", "Texts waiting for a batch")
JOBS = Counter("review_classifier_background_jobs", "Background jobs (explanation chunks) run")

# A forward pass: ``(input_ids, attention_mask)``, int64 [n, L], to probabilities [n, k].
Forward = Callable[[np.ndarray, np.ndarray], np.ndarray]


class Overloaded(ServerNotReady):
    """The queue is full: refuse now rather than queue without limit.

    503 with Retry-After over HTTP; UNAVAILABLE over gRPC (KServe's interceptor maps
    ServerNotReady to it: kserve/protocol/grpc/interceptors.py, ExceptionToStatusInterceptor).
    """

    def __init__(self, queued: int, limit: int, retry_after_s: int, what: str = "texts") -> None:
        self.retry_after_s = retry_after_s
        self.reason = (f"overloaded: {queued} {what} already wait for the model (limit {limit}); "
                       f"retry after {retry_after_s} s")  # fmt: skip
        super().__init__(self.reason)


@dataclass
class _Pending:
    seqs: list[Sequence[int]]
    future: asyncio.Future
    tokens: int
    enqueued: float = field(default_factory=time.perf_counter)


class TokenBudgetBatcher:
    """Collects concurrent ``submit`` calls into token-budget batches for ``forward``."""

    def __init__(
        self,
        forward: Forward,
        pad_id: int = 0,
        max_batch_tokens: int = 8192,
        max_batch_size: int = 64,
        max_queue: int = 512,
        pad_to_multiple: int = 1,
        max_padding: float = 0.25,
        max_jobs: int = 64,
        jobs_every: int = 4,
    ) -> None:
        self.forward = forward
        self.pad_id = pad_id
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.pad_to_multiple = pad_to_multiple
        self.max_padding = max_padding
        self._waiting: collections.deque[_Pending] = collections.deque()
        self._jobs: collections.deque[tuple[Callable[[], Any], asyncio.Future]] = (
            collections.deque()
        )
        self._idle_jobs: collections.deque[tuple[Callable[[], Any], asyncio.Future]] = (
            collections.deque()
        )
        self.max_jobs = max_jobs
        self.jobs_every = jobs_every
        self._batches_since_job = 0
        self._queued_texts = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        # one batch in flight: the forward pass owns the cores (CPU) or the stream (GPU)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="forward")
        self._rate = 0.0  # texts/s over recent batches, for Retry-After

    def _ensure_started(self) -> asyncio.Event:
        if self._wake is None or self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._collect())
        return self._wake

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained, at the recent throughput (at least 1)."""
        if self._rate <= 0:
            return 1
        return max(1, math.ceil(self._queued_texts / self._rate))

    async def submit(self, seqs: list[Sequence[int]]) -> np.ndarray:
        """Probabilities for the token id sequences ``seqs``, in whatever batch they land in."""
        wake = self._ensure_started()
        # a request larger than the bound still gets in alone (else it could never be served)
        if self._queued_texts and self._queued_texts + len(seqs) > self.max_queue:
            REJECTED.inc()
            raise Overloaded(self._queued_texts, self.max_queue, self.retry_after())
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(_Pending(seqs, future, sum(len(s) for s in seqs)))
        self._queued_texts += len(seqs)
        QUEUED.set(self._queued_texts)
        wake.set()
        return await future

    async def run_job(self, job: Callable[[], Any], idle_only: bool = False) -> Any:
        """``job()`` on the forward thread, behind waiting predictions (see the module doc)."""
        wake = self._ensure_started()
        lane = self._idle_jobs if idle_only else self._jobs
        if len(lane) >= self.max_jobs:
            REJECTED.inc()
            raise Overloaded(len(lane), self.max_jobs, self.retry_after(), "jobs")
        future = asyncio.get_running_loop().create_future()
        lane.append((job, future))
        wake.set()
        return await future

    def _take_batch(self) -> list[_Pending]:
        """Waiting requests in arrival order up to the token and size budgets (at least one)."""
        batch: list[_Pending] = []
        tokens = texts = 0
        while self._waiting:
            item = self._waiting[0]
            if item.future.done():  # cancelled: the client went away
                self._waiting.popleft()
                self._queued_texts -= len(item.seqs)
                CANCELLED.inc()
                continue
            fits = (tokens + item.tokens <= self.max_batch_tokens
                    and texts + len(item.seqs) <= self.max_batch_size)  # fmt: skip
            if batch and not fits:
                break
            self._waiting.popleft()
            self._queued_texts -= len(item.seqs)
            batch.append(item)
            tokens += item.tokens
            texts += len(item.seqs)
        QUEUED.set(self._queued_texts)
        return batch

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._waiting and not self._jobs and not self._idle_jobs:
                self._wake.clear()
                await self._wake.wait()
            job_due = self._jobs and (not self._waiting
                                      or self._batches_since_job >= self.jobs_every)  # fmt: skip
            batch = [] if job_due else self._take_batch()
            if batch:
                await self._run(batch, loop)
                self._batches_since_job += 1
            elif self._jobs:
                self._batches_since_job = 0
                await self._run_job(*self._jobs.popleft(), loop)
            elif self._idle_jobs and not self._waiting:
                await self._run_job(*self._idle_jobs.popleft(), loop)

    async def _run_job(self, job: Callable[[], Any], future: asyncio.Future,
                       loop: asyncio.AbstractEventLoop) -> None:  # fmt: skip
        if future.done():  # cancelled: the client went away
            return
        JOBS.inc()
        try:
            result = await loop.run_in_executor(self._executor, job)
        except Exception as e:  # noqa: BLE001 - the job's caller gets the error
            if not future.done():
                future.set_exception(e)
            return
        if not future.done():
            future.set_result(result)

    async def _run(self, batch: list[_Pending], loop: asyncio.AbstractEventLoop) -> None:
        now = time.perf_counter()
        seqs = [s for item in batch for s in item.seqs]
        for item in batch:
            QUEUE_SECONDS.observe(now - item.enqueued)
        BATCH_SIZE.observe(len(seqs))
        BATCH_TOKENS.observe(sum(item.tokens for item in batch))
        BATCHES.inc()
        try:
            probs = await loop.run_in_executor(self._executor, self.run_batch, seqs)
        except Exception as e:  # noqa: BLE001 - every waiting request must get the error
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(e)
            return
        elapsed = max(time.perf_counter() - now, 1e-6)
        self._rate = (
            0.8 * self._rate + 0.2 * (len(seqs) / elapsed) if self._rate else len(seqs) / elapsed
        )
        start = 0
        for item in batch:
            end = start + len(item.seqs)
            if not item.future.done():
                item.future.set_result(probs[start:end])
            start = end

    def warm_up(self, seqs: list[Sequence[int]]) -> np.ndarray:
        """One batch on the forward thread, the only thread that ever runs the model.

        PyTorch's OpenMP threads belong to the thread that starts them: a forward pass on a
        second thread (the main one, at load) leaves two teams competing for the cores, which
        doubled the batch-1 forward of MiniLM on 2 cores (7 ms to 13 ms).
        """
        return self._executor.submit(self.run_batch, seqs).result()

    def run_batch(self, seqs: list[Sequence[int]]) -> np.ndarray:
        """Probabilities for ``seqs`` (in their order): one forward pass per length bucket."""
        lengths = [len(s) for s in seqs]
        out: np.ndarray | None = None
        for idx in plan_buckets(lengths, self.max_batch_size, self.max_padding):
            ids, mask = pad([seqs[i] for i in idx], self.pad_id, self.pad_to_multiple)
            probs = self.forward(ids, mask)
            FORWARDS.inc()
            PADDED_TOKENS.inc(ids.size)
            REAL_TOKENS.inc(int(mask.sum()))
            if out is None:
                out = np.empty((len(seqs), probs.shape[1]), dtype=np.float32)
            out[idx] = probs
        return out
