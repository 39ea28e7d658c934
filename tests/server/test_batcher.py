"""TokenBudgetBatcher driven by a fake backend whose latency and failures the test controls."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from server.batching.batcher import BatcherConfig, TokenBudgetBatcher
from server.errors import DeadlineExceeded, InferenceFailed, Overloaded, Unavailable

DIM = 4


class FakeBackend:
    """Tokens = one per word + 2 specials; vector = deterministic function of the text."""

    dim = DIM

    def __init__(self, latency_s: float = 0.0) -> None:
        self.latency_s = latency_s
        self.batches: list[tuple[list[int], int]] = []  # (token lengths, seq_len)
        self.seen_texts: list[str] = []
        self.fail_when = lambda ids: False
        self.gate = threading.Event()
        self.gate.set()
        self._texts: dict[int, str] = {}

    def tokenize(self, text: str) -> np.ndarray:
        ids = np.arange(len(text.split()) + 2, dtype=np.int64) + len(self._texts) * 1000
        self._texts[int(ids[0])] = text
        return ids

    def infer(self, token_ids, seq_len):
        self.gate.wait(timeout=10)
        time.sleep(self.latency_s)
        if self.fail_when(token_ids):
            raise RuntimeError("injected failure")
        self.batches.append(([len(t) for t in token_ids], seq_len))
        texts = [self._texts[int(t[0])] for t in token_ids]
        self.seen_texts.extend(texts)
        return np.stack([expected_vector(t) for t in texts])


def expected_vector(text: str) -> np.ndarray:
    v = np.array([len(text), text.count("a") + 1, text.count("e") + 1, 1.0], dtype=np.float32)
    return v / np.linalg.norm(v)


async def started(backend, **config) -> TokenBudgetBatcher:
    health: list[bool] = []
    batcher = TokenBudgetBatcher(backend, BatcherConfig(**config), on_health_change=health.append)
    batcher.health_log = health
    await batcher.start()
    return batcher


async def test_concurrent_texts_are_batched_and_answered_correctly():
    backend = FakeBackend(latency_s=0.01)
    batcher = await started(backend, max_wait_us=2000)
    texts = [f"item number {i} " + "word " * (i % 5) for i in range(40)]
    results = await asyncio.gather(*(batcher.embed([t]) for t in texts))
    for text, (vectors, timing) in zip(texts, results):
        np.testing.assert_allclose(vectors[0], expected_vector(text))
        assert timing.encode_s > 0
    assert len(backend.batches) < len(texts)  # real batching happened
    assert max(len(lengths) for lengths, _ in backend.batches) > 1
    await batcher.stop()


async def test_batches_respect_token_budget_size_and_length_buckets():
    backend = FakeBackend(latency_s=0.005)
    batcher = await started(backend, max_batch_size=5, max_batch_tokens=64, max_wait_us=5000)
    texts = [("w " * n) + str(i) for i, n in enumerate([1, 2, 10, 12, 1, 3, 20, 25, 2, 11] * 3)]
    await asyncio.gather(*(batcher.embed([t]) for t in texts))
    for lengths, seq_len in backend.batches:
        assert len(lengths) <= 5
        assert len(lengths) * seq_len <= 64 or len(lengths) == 1
        assert all(length <= seq_len for length in lengths)
        smaller_bucket = [b for b in BatcherConfig().buckets if b < seq_len]
        assert not smaller_bucket or all(length > smaller_bucket[-1] for length in lengths)
    await batcher.stop()


async def test_full_queue_is_refused_at_once():
    backend = FakeBackend()
    backend.gate.clear()  # inference blocks until the test opens the gate
    batcher = await started(backend, max_queue=4, max_batch_size=1, max_wait_us=0)
    tasks = [asyncio.create_task(batcher.embed([f"text {i}"])) for i in range(8)]
    await asyncio.sleep(0.05)
    refused = [t for t in tasks if t.done() and isinstance(t.exception(), Overloaded)]
    assert refused, "a full queue must answer Overloaded while inference is still blocked"
    assert not backend.gate.is_set()
    backend.gate.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert sum(isinstance(o, tuple) for o in outcomes) == 8 - len(refused)
    await batcher.stop()


async def test_expired_requests_are_dropped_before_inference():
    backend = FakeBackend()
    backend.gate.clear()
    batcher = await started(backend, max_batch_size=1, max_wait_us=0)
    blocker = asyncio.create_task(batcher.embed(["first text occupies the worker"]))
    await asyncio.sleep(0.02)
    doomed = asyncio.create_task(batcher.embed(["late text"], deadline=time.monotonic() + 0.05))
    await asyncio.sleep(0.1)
    backend.gate.set()
    with pytest.raises(DeadlineExceeded):
        await doomed
    await blocker
    assert "late text" not in backend.seen_texts
    await batcher.stop()


async def test_failed_batch_fails_only_its_requests_and_health_recovers():
    backend = FakeBackend(latency_s=0.002)
    backend.fail_when = lambda ids: len(ids) == 1 and len(ids[0]) == 9  # the 7-word text
    batcher = await started(backend, max_batch_size=1, max_wait_us=0)
    bad = "one two three four five six seven"
    outcomes = await asyncio.gather(
        batcher.embed(["good text"]), batcher.embed([bad]), batcher.embed(["another good"]),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], InferenceFailed)
    assert isinstance(outcomes[0], tuple) and isinstance(outcomes[2], tuple)
    await asyncio.sleep(0.1)
    assert batcher.health_log[-2:] == [False, True]  # probe succeeded: serving again
    vectors, _ = await batcher.embed(["still works"])
    np.testing.assert_allclose(vectors[0], expected_vector("still works"))
    await batcher.stop()


async def test_backend_that_keeps_failing_goes_unavailable_not_hanging():
    backend = FakeBackend()
    backend.fail_when = lambda ids: True
    batcher = await started(backend, max_wait_us=0)
    with pytest.raises(InferenceFailed):
        await batcher.embed(["x"])
    await asyncio.sleep(0.1)
    assert batcher.healthy is False and batcher.dead_reason
    with pytest.raises(Unavailable):
        await batcher.embed(["y"])
    await batcher.stop()


async def test_hung_inference_marks_backend_dead():
    backend = FakeBackend()
    backend.gate.clear()
    batcher = await started(backend, inference_timeout_s=0.1, max_wait_us=0)
    with pytest.raises(Unavailable):
        await asyncio.wait_for(batcher.embed(["hangs"]), timeout=5)
    assert batcher.healthy is False
    backend.gate.set()
    await batcher.stop()


async def test_identical_texts_in_flight_are_encoded_once_and_then_cached():
    backend = FakeBackend(latency_s=0.02)
    batcher = await started(backend, max_wait_us=1000)
    results = await asyncio.gather(*(batcher.embed(["same query"]) for _ in range(10)))
    assert backend.seen_texts.count("same query") == 1
    assert all(np.array_equal(r[0], results[0][0]) for r in results)
    await batcher.embed(["same query"])
    assert backend.seen_texts.count("same query") == 1
    hits = batcher.metrics.registry.get_sample_value(
        "recserve_embedding_cache_lookups_total", {"result": "hit"})
    assert hits >= 1
    await batcher.stop()


async def test_many_texts_in_one_call_keep_their_order():
    backend = FakeBackend()
    batcher = await started(backend)
    texts = ["alpha", "beta gamma delta epsilon zeta eta theta iota kappa", "alpha", "e"]
    vectors, _ = await batcher.embed(texts)
    for text, vector in zip(texts, vectors):
        np.testing.assert_allclose(vector, expected_vector(text))
    await batcher.stop()


async def test_uncached_texts_neither_read_nor_fill_the_cache():
    backend = FakeBackend()
    batcher = await started(backend, max_wait_us=0)
    await batcher.embed(["an item text"], cache=False)
    await batcher.embed(["an item text"], cache=False)
    assert backend.seen_texts.count("an item text") == 2
    assert len(batcher.cache) == 0
    await batcher.stop()


class ReleasingBackend(FakeBackend):
    def __init__(self, latency_s: float = 0.0) -> None:
        super().__init__(latency_s)
        self.releases: list[float] = []

    def release_memory(self) -> None:
        self.releases.append(time.monotonic())


async def test_idle_buffers_are_released_only_after_a_gap_with_no_batch():
    backend = ReleasingBackend(latency_s=0.01)
    batcher = await started(backend, idle_release_s=0.2, max_wait_us=0)
    try:
        busy_until = time.monotonic() + 0.6
        n = 0
        while time.monotonic() < busy_until:  # a batch every ~10 ms: never 0.2 s idle
            await batcher.embed([f"busy text {n}"])
            n += 1
        assert backend.releases == []
        last_batch = time.monotonic()
        await asyncio.sleep(0.4)
        assert len(backend.releases) == 1  # once per idle gap, not every 0.2 s
        assert backend.releases[0] - last_batch >= 0.2 - 0.02
    finally:
        await batcher.stop()


async def test_idle_release_off_and_explicit_release():
    backend = ReleasingBackend()
    batcher = await started(backend, idle_release_s=0)
    try:
        await batcher.embed(["one text"])
        await asyncio.sleep(0.1)
        assert backend.releases == []
        await batcher.release_memory()  # what warm-up calls
        assert len(backend.releases) == 1
    finally:
        await batcher.stop()


async def test_a_backend_without_release_memory_is_served_as_before():
    batcher = await started(FakeBackend(), idle_release_s=0.05)
    try:
        vectors, _ = await batcher.embed(["plain backend"])
        await asyncio.sleep(0.15)
        await batcher.release_memory()
        np.testing.assert_allclose(vectors[0], expected_vector("plain backend"))
    finally:
        await batcher.stop()
