"""Dynamic batching: concurrent requests share one forward pass.

Requests queue their texts; one collector task takes the first waiting request, then keeps
adding requests until ``max_batch_size`` texts or ``max_batch_delay_ms`` have passed, runs the
model once in a worker thread (the event loop keeps accepting requests) and hands each
request its own slice of the result.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import Counter, Histogram

BATCH_SIZE = Histogram(
    "review_classifier_batch_size",
    "Texts per forward pass of the dynamic batcher",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
QUEUE_SECONDS = Histogram(
    "review_classifier_queue_seconds",
    "Time a request waited in the batch queue before its forward pass",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
BATCHES = Counter("review_classifier_batches", "Forward passes run by the dynamic batcher")


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    """Collects concurrent ``submit`` calls into batches for ``infer(texts) -> probs``."""

    def __init__(
        self,
        infer: Callable[[list[str]], np.ndarray],
        max_batch_size: int = 32,
        max_batch_delay_ms: float = 5.0,
    ) -> None:
        self.infer = infer
        self.max_batch_size = max_batch_size
        self.max_delay = max_batch_delay_ms / 1000.0
        self.quiet = min(self.max_delay, 0.001)  # the gap that ends the wait early
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task | None = None

    def _ensure_started(self) -> asyncio.Queue:
        if self._queue is None or self._task is None or self._task.done():
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._collect())
        return self._queue

    async def submit(self, texts: list[str]) -> np.ndarray:
        """Probabilities for ``texts``, computed in whatever batch they land in."""
        future = asyncio.get_running_loop().create_future()
        await self._ensure_started().put(_Pending(texts, future))
        return await future

    async def _collect(self) -> None:
        queue = self._queue
        loop = asyncio.get_running_loop()
        last_size = 1
        while True:
            first = await queue.get()
            batch, size = [first], len(first.texts)
            # Whatever queued while the previous batch ran joins at once.
            while size < self.max_batch_size and not queue.empty():
                item = queue.get_nowait()
                batch.append(item)
                size += len(item.texts)
            # Wait for company only under concurrent load (a lone client pays no delay), and
            # only while requests keep arriving: a quiet gap means everyone is already here.
            deadline = loop.time() + self.max_delay
            while size < self.max_batch_size and last_size > 1:
                timeout = min(deadline - loop.time(), self.quiet)
                if timeout <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError:
                    break
                batch.append(item)
                size += len(item.texts)
            last_size = len(batch)
            await self._run(batch)

    async def _run(self, batch: list[_Pending]) -> None:
        now = time.perf_counter()
        texts = [t for item in batch for t in item.texts]
        for item in batch:
            QUEUE_SECONDS.observe(now - item.enqueued)
        BATCH_SIZE.observe(len(texts))
        BATCHES.inc()
        try:
            probs = await asyncio.to_thread(self.infer, texts)
        except Exception as e:  # noqa: BLE001 - every waiting request must get the error
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(e)
            return
        start = 0
        for item in batch:
            end = start + len(item.texts)
            if not item.future.done():
                item.future.set_result(probs[start:end])
            start = end
