"""The token-budget batcher: budgets, buckets, order, errors, back-pressure, cancellation."""

import asyncio
import threading

import numpy as np
import pytest

from components.serve.batching import Overloaded, TokenBudgetBatcher, pad, plan_buckets


def _recording(calls: list[tuple[int, int]], gate: threading.Event | None = None):
    """A forward pass that records each call's shape and answers with each row's first id."""

    def forward(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if gate is not None:
            gate.wait(10)
        calls.append(ids.shape)
        assert (mask.sum(axis=1) >= 1).all()
        return np.stack([ids[:, 0].astype(np.float32), mask.sum(axis=1).astype(np.float32)], axis=1)

    return forward


def _seq(tag: int, length: int) -> list[int]:
    return [tag] + [7] * (length - 1)


def test_buckets_sort_by_length_and_bound_the_padding():
    lengths = [60, 3, 64, 5, 4, 58, 3, 62, 30, 31, 29, 6]
    buckets = plan_buckets(lengths, max_batch_size=64, max_padding=0.25, min_bucket=2)
    assert sorted(i for b in buckets for i in b) == list(range(len(lengths)))
    for b in buckets:
        real = sum(lengths[i] for i in b)
        padded = len(b) * max(lengths[i] for i in b)
        assert padded <= 1.25 * real, (b, padded, real)
    # the short reviews never share a bucket with the long ones
    for b in buckets:
        assert max(lengths[i] for i in b) < 10 or min(lengths[i] for i in b) > 25
    assert len(buckets) <= 4


def test_buckets_respect_the_size_limit():
    buckets = plan_buckets([10] * 20, max_batch_size=8)
    assert [len(b) for b in buckets] == [8, 8, 4]


def test_pad_rounds_the_width_up_and_masks_the_padding():
    ids, mask = pad([[1, 2, 3], [4]], pad_id=0, multiple=8)
    assert ids.shape == (2, 8) and ids[1].tolist() == [4] + [0] * 7
    assert mask.sum(axis=1).tolist() == [3, 1]


def test_concurrent_requests_share_batches_and_get_their_own_rows():
    calls: list = []
    batcher = TokenBudgetBatcher(_recording(calls), max_batch_tokens=10_000, max_batch_size=16)

    async def run() -> list[np.ndarray]:
        return await asyncio.gather(*(batcher.submit([_seq(i, 3 + i % 40)]) for i in range(64)))

    results = asyncio.run(run())
    assert [r[0, 0] for r in results] == [float(i) for i in range(64)]
    assert [r[0, 1] for r in results] == [float(3 + i % 40) for i in range(64)]
    assert sum(n for n, _ in calls) == 64 and max(n for n, _ in calls) <= 16 and len(calls) < 64


def test_the_token_budget_caps_a_batch():
    calls: list = []
    gate = threading.Event()
    batcher = TokenBudgetBatcher(
        _recording(calls, gate), max_batch_tokens=100, max_batch_size=64, max_padding=10.0
    )

    async def run():
        first = asyncio.ensure_future(batcher.submit([_seq(0, 50)]))  # runs alone, held by the gate
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(batcher.submit([_seq(i, 50)])) for i in range(1, 7)]
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(first, *rest)

    out = asyncio.run(run())
    assert [o[0, 0] for o in out] == list(range(7))
    # 50-token requests under a 100-token budget: the six queued ones run two by two
    assert [n for n, _ in calls] == [1, 2, 2, 2]


def test_a_multi_text_request_stays_together_and_in_order():
    calls: list = []
    batcher = TokenBudgetBatcher(_recording(calls), max_batch_tokens=8, max_batch_size=4)
    seqs = [_seq(i, 1 + (5 * i) % 7) for i in range(6)]
    out = asyncio.run(batcher.submit(seqs))
    assert out[:, 0].tolist() == [0, 1, 2, 3, 4, 5]
    assert out[:, 1].tolist() == [len(s) for s in seqs]
    assert sum(n for n, _ in calls) == 6 and max(n for n, _ in calls) <= 4


def test_inference_errors_reach_every_waiting_request():
    def boom(ids, mask):
        raise RuntimeError("device lost")

    batcher = TokenBudgetBatcher(boom)

    async def run():
        return await asyncio.gather(
            *(batcher.submit([_seq(1, 3)]) for _ in range(3)), return_exceptions=True
        )

    errors = asyncio.run(run())
    assert all(isinstance(e, RuntimeError) and "device lost" in str(e) for e in errors)


def test_a_lone_client_does_not_wait_for_company():
    # no wait timer: an idle model starts on a single request at once
    batcher = TokenBudgetBatcher(lambda ids, mask: np.zeros((len(ids), 2), np.float32))

    async def run() -> int:
        for _ in range(3):
            await asyncio.wait_for(batcher.submit([_seq(1, 3)]), timeout=5)
        return 3

    assert asyncio.run(run()) == 3


def test_a_full_queue_refuses_with_a_retry_after_and_serves_the_rest():
    calls: list = []
    gate = threading.Event()
    batcher = TokenBudgetBatcher(_recording(calls, gate), max_batch_size=4, max_queue=8)

    async def run():
        running = asyncio.ensure_future(batcher.submit([_seq(0, 3)]))  # in the forward pass
        await asyncio.sleep(0.05)
        queued = [asyncio.ensure_future(batcher.submit([_seq(i, 3)])) for i in range(1, 9)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded) as refused:
            await batcher.submit([_seq(99, 3)])
        gate.set()
        served = await asyncio.gather(running, *queued)
        return refused.value, served

    refused, served = asyncio.run(run())
    assert refused.retry_after_s >= 1 and "limit 8" in str(refused)
    assert [s[0, 0] for s in served] == list(range(9))
    # after the queue drained, requests are accepted again; one larger than the bound, alone
    assert asyncio.run(batcher.submit([_seq(5, 3)]))[0, 0] == 5
    assert asyncio.run(batcher.submit([_seq(i, 3) for i in range(10)]))[:, 0].tolist() == list(
        range(10)
    )


def test_a_cancelled_request_is_dropped_before_its_forward_pass():
    calls: list = []
    gate = threading.Event()
    batcher = TokenBudgetBatcher(_recording(calls, gate), max_batch_size=64)

    async def run():
        running = asyncio.ensure_future(batcher.submit([_seq(0, 3)]))
        await asyncio.sleep(0.05)
        gone = asyncio.ensure_future(batcher.submit([_seq(1, 3), _seq(2, 3)]))
        kept = asyncio.ensure_future(batcher.submit([_seq(3, 3)]))
        await asyncio.sleep(0)
        gone.cancel()  # what the disconnect middleware does when the client goes away
        gate.set()
        return await asyncio.gather(running, kept)

    first, kept = asyncio.run(run())
    assert first[0, 0] == 0 and kept[0, 0] == 3
    assert [n for n, _ in calls] == [1, 1]  # texts 1 and 2 never reached the model


def _ordered_run(jobs_every: int, idle_only: bool) -> tuple[list[str], list]:
    """A batch held in its forward pass, then 8 queued predictions and 3 jobs: what ran when."""
    events: list[str] = []
    gate = threading.Event()

    def forward(ids, mask):
        gate.wait(10)
        events.append(f"batch{int(ids[0, 0])}")
        return np.zeros((len(ids), 2), np.float32)

    batcher = TokenBudgetBatcher(forward, max_batch_size=1, jobs_every=jobs_every, max_jobs=2)

    async def run():
        first = asyncio.ensure_future(batcher.submit([_seq(0, 3)]))
        await asyncio.sleep(0.05)
        jobs = [asyncio.ensure_future(batcher.run_job(lambda j=j: events.append(f"job{j}") or j,
                                                      idle_only)) for j in range(2)]  # fmt: skip
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match="2 jobs already wait"):
            await batcher.run_job(lambda: None, idle_only)
        preds = [asyncio.ensure_future(batcher.submit([_seq(i, 3)])) for i in range(1, 9)]
        await asyncio.sleep(0)
        gate.set()
        return await asyncio.gather(first, *preds, *jobs)

    return events, asyncio.run(run())


def test_jobs_wait_behind_predictions_but_still_progress():
    events, results = _ordered_run(jobs_every=4, idle_only=False)
    assert results[-2:] == [0, 1]
    # one job after every 4 prediction batches, never two jobs between two batches
    assert events == ["batch0", "batch1", "batch2", "batch3", "job0", "batch4", "batch5",
                      "batch6", "batch7", "job1", "batch8"]  # fmt: skip


def test_idle_only_jobs_never_go_before_a_waiting_prediction():
    events, results = _ordered_run(jobs_every=1, idle_only=True)
    assert results[-2:] == [0, 1]
    assert events == [f"batch{i}" for i in range(9)] + ["job0", "job1"]
