import asyncio
import time

import numpy as np

from components.serve.batching import DynamicBatcher


def _infer_recording(sizes: list[int]):
    def infer(texts: list[str]) -> np.ndarray:
        sizes.append(len(texts))
        time.sleep(0.002)
        return np.array([[float(t.split()[-1]), 0.0] for t in texts])

    return infer


def test_concurrent_requests_share_batches_and_get_their_own_rows():
    sizes: list[int] = []
    batcher = DynamicBatcher(_infer_recording(sizes), max_batch_size=16, max_batch_delay_ms=5)

    async def run() -> list[np.ndarray]:
        return await asyncio.gather(*(batcher.submit([f"text {i}"]) for i in range(64)))

    results = asyncio.run(run())
    assert [r[0, 0] for r in results] == [float(i) for i in range(64)]
    assert sum(sizes) == 64 and max(sizes) <= 16 and len(sizes) < 64


def test_a_multi_text_request_stays_together():
    sizes: list[int] = []
    batcher = DynamicBatcher(_infer_recording(sizes), max_batch_size=4, max_batch_delay_ms=1)
    out = asyncio.run(batcher.submit([f"t {i}" for i in range(6)]))
    assert out[:, 0].tolist() == [0, 1, 2, 3, 4, 5] and sizes == [6]


def test_inference_errors_reach_every_waiting_request():
    def boom(texts):
        raise RuntimeError("device lost")

    batcher = DynamicBatcher(boom, max_batch_size=8, max_batch_delay_ms=1)

    async def run():
        return await asyncio.gather(
            *(batcher.submit(["x 1"]) for _ in range(3)), return_exceptions=True
        )

    errors = asyncio.run(run())
    assert all(isinstance(e, RuntimeError) and "device lost" in str(e) for e in errors)


def test_a_lone_client_does_not_wait_for_company():
    # With a 10 s batching delay, sequential requests from one client must not sit in the
    # queue waiting for others: each returns long before the delay would end.
    batcher = DynamicBatcher(lambda texts: np.zeros((len(texts), 2)), max_batch_size=64,
                             max_batch_delay_ms=10_000)  # fmt: skip

    async def run() -> int:
        for _ in range(3):
            await asyncio.wait_for(batcher.submit(["x 1"]), timeout=5)
        return 3

    assert asyncio.run(run()) == 3
