"""TokenBudgetBatcher: admission, length buckets, token-budget batches, one inference thread.

Flow: `embed()` admits each text at once or refuses (Overloaded), tokenizes it on the event
loop, and parks it in its sequence-length bucket. The batch loop closes a batch from the
bucket holding the oldest text when the bucket is full (max_batch_size or max_batch_tokens
padded tokens), or when the worker is free and the oldest text has waited max_wait_us. Up
to two batches are in flight: one running on the inference thread (ONNX Runtime releases
the GIL), one padded and ready, so new arrivals are tokenized while the model runs.

Failure rules: a request whose deadline passed while queued is dropped before inference; a
failed batch fails only its own requests and triggers a health probe; a probe failure or an
inference call that hangs past inference_timeout_s marks the backend dead: health goes
NOT_SERVING, queued and new requests get Unavailable, never a hang. A dead backend is probed
again with backoff (probe_backoff_s doubling up to probe_backoff_max_s) and is healthy again
as soon as a probe's real inference succeeds (the Triton/TEI behaviour).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from export.settings import RecserveSettings, settings_config
from export.tokenization import DEFAULT_BUCKETS, bucket_length
from server.batching.backend import Backend, with_faults
from server.batching.cache import EmbeddingCache
from server.errors import DeadlineExceeded, InferenceFailed, Overloaded, Unavailable
from server.metrics import ServerMetrics

log = logging.getLogger(__name__)


class BatcherConfig(RecserveSettings):
    model_config = settings_config("batcher")

    max_batch_size: int = 16
    """Most texts in one inference batch (16: best throughput and tail for MiniLM int8 on one CPU core,
    bench/serve.py; raise it on GPU)."""
    max_batch_tokens: int = 4096
    """Most padded tokens (batch size x bucket length) in one batch."""
    max_wait_us: int = 500
    """Longest the oldest queued text waits for its batch to fill once the worker is free."""
    max_queue: int = 256
    """Texts admitted but not yet in inference; beyond this, requests are refused at once.

    About half a second of work at CPU throughput: a longer queue only adds latency."""
    cache_size: int = 20000
    """Query embeddings kept in the LRU cache (0 disables it)."""
    inference_timeout_s: float = 30.0
    """An inference call running longer than this marks the backend dead."""
    buckets: tuple[int, ...] = DEFAULT_BUCKETS
    """Sequence-length buckets texts are padded to."""
    probe_backoff_s: float = 0.25
    """First wait before probing a dead backend again; doubles after each failed probe."""
    probe_backoff_max_s: float = 2.0
    """Longest wait between two probes of a dead backend."""
    idle_release_s: float = 2.0
    """After this long with no batch, the encoder gives its idle buffers back to the OS (ORT
    arena shrinkage: the largest batch's ~90 MB for MiniLM at 16 x 256 tokens). A busy server
    has no such gap and keeps them; 0 keeps them always."""
    inference_nice: int = 10
    """Niceness added to the inference thread (Linux): the event loop that admits, refuses and
    answers calls then never starves behind inference on a busy CPU (0 = same priority; at 0 or 2
    a 3x overload collapses into timeouts, bench/overload.py)."""
    fault_file: str = ""
    """Fault injection for drills and tests: while this file exists, inference hangs (or fails
    at once when the file says `fail`). Empty: off."""


def _lower_priority(nice: int) -> None:
    """Runs on the inference thread: make it yield the CPU to the event loop thread."""
    if nice > 0 and hasattr(os, "setpriority"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        except OSError:  # not permitted here: run at the same priority
            log.warning("could not lower the inference thread's priority")


@dataclass
class EmbedTiming:
    """Where a text's time went: waiting in the queue, and its batch's inference."""

    queue_s: float = 0.0
    encode_s: float = 0.0


@dataclass(eq=False)
class _Pending:
    text: str
    ids: np.ndarray
    bucket: int
    enqueued: float
    deadline: float
    future: asyncio.Future = field(repr=False)
    cacheable: bool = True


class TokenBudgetBatcher:
    """Turns concurrent embed() calls into length-bucketed batches on one inference thread."""

    def __init__(
        self,
        backend: Backend,
        config: BatcherConfig | None = None,
        metrics: ServerMetrics | None = None,
        on_health_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.config = config or BatcherConfig()
        self.backend = with_faults(backend, self.config.fault_file)
        self.metrics = metrics or ServerMetrics()
        self._on_health_change = on_health_change
        self.cache = EmbeddingCache(self.config.cache_size)
        self._buckets: dict[int, deque[_Pending]] = {b: deque() for b in self.config.buckets}
        self._queued = 0
        self._in_flight: dict[str, _Pending] = {}
        self._running_batches = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recserve-infer",
                                            initializer=_lower_priority, initargs=(self.config.inference_nice,))
        self._wake: asyncio.Event | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._release_timer: asyncio.TimerHandle | None = None
        self._last_batch_end = 0.0  # loop time
        self._loop_task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self.healthy = False
        self.dead_reason: str | None = None
        self._recovery: asyncio.Task | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the batch loop on the running event loop."""
        self._wake = asyncio.Event()
        self._loop_task = asyncio.create_task(self._batch_loop(), name="recserve-batch-loop")
        self._loop_task.add_done_callback(self._on_loop_exit)
        self._set_health(True)

    async def stop(self) -> None:
        """Stop taking work; fail what is still queued; wait for running batches."""
        if self._loop_task is not None:
            self._loop_task.cancel()
        if self._recovery is not None:
            self._recovery.cancel()
        if self._release_timer is not None:
            self._release_timer.cancel()
        self._fail_queued(Unavailable("server is shutting down"))
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ---- the API ---------------------------------------------------------------------------

    async def embed(
        self, texts: Sequence[str], deadline: float | None = None, *, cache: bool = True
    ) -> tuple[np.ndarray, EmbedTiming]:
        """[len(texts), dim] embeddings. deadline is time.monotonic() based (None = no deadline).

        cache=False (item texts of live upserts): neither read nor fill the query cache, so a
        bulk upsert does not evict the query embeddings the cache is for.
        """
        if self.dead_reason is not None:
            raise Unavailable("inference backend is not available")
        now = time.monotonic()
        deadline = float("inf") if deadline is None else deadline
        vectors: list[np.ndarray | None] = [None] * len(texts)
        waits: list[tuple[int, asyncio.Future]] = []
        lookup = self.cache.get if cache else (lambda _text: None)
        new = [t for t in texts if lookup(t) is None and t not in self._in_flight]
        if self._queued + len(set(new)) > self.config.max_queue:
            self.metrics.rejected.labels("queue_full").inc()
            raise Overloaded("server is at capacity; retry with backoff")
        for i, text in enumerate(texts):
            if cache:
                cached = self.cache.get(text)
                if cached is not None:
                    self.metrics.cache_lookups.labels("hit").inc()
                    vectors[i] = cached
                    continue
                self.metrics.cache_lookups.labels("miss").inc()
            pending = self._in_flight.get(text)
            if pending is None:
                pending = self._admit(text, now, deadline, cache)
            else:
                pending.deadline = max(pending.deadline, deadline)
            waits.append((i, pending.future))
        timing = EmbedTiming()
        if waits:
            results = await asyncio.gather(*(asyncio.shield(f) for _, f in waits))
            for (i, _), (vector, t) in zip(waits, results):
                vectors[i] = vector
                timing.queue_s = max(timing.queue_s, t.queue_s)
                timing.encode_s = max(timing.encode_s, t.encode_s)
        return np.stack(vectors) if vectors else np.empty((0, self.backend.dim), np.float32), timing

    @property
    def queue_depth(self) -> int:
        return self._queued

    # ---- admission and batch formation -----------------------------------------------------

    def _admit(self, text: str, now: float, deadline: float, cache: bool) -> _Pending:
        ids = self.backend.tokenize(text)
        bucket = bucket_length(len(ids), self.config.buckets)
        future = asyncio.get_running_loop().create_future()
        pending = _Pending(text, ids, bucket, now, deadline, future, cache)
        self._buckets[bucket].append(pending)
        self._in_flight[text] = pending
        self._queued += 1
        self.metrics.queue_depth.set(self._queued)
        self._wake.set()
        return pending

    def _bucket_is_full(self, queue: deque[_Pending], seq_len: int) -> bool:
        return (
            len(queue) >= self.config.max_batch_size
            or (len(queue) + 1) * seq_len > self.config.max_batch_tokens
        )

    def _oldest_bucket(self) -> tuple[int, deque[_Pending]]:
        return min(
            ((b, q) for b, q in self._buckets.items() if q), key=lambda bq: bq[1][0].enqueued
        )

    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queued and self._running_batches < 2:
                seq_len, queue = self._oldest_bucket()
                if not self._bucket_is_full(queue, seq_len):
                    if self._running_batches:  # worker busy: let the batch keep filling
                        break
                    wait_left = queue[0].enqueued + self.config.max_wait_us / 1e6 - loop.time()
                    if wait_left > 0:
                        if self._timer is not None:
                            self._timer.cancel()
                        self._timer = loop.call_later(wait_left, self._wake.set)
                        break
                batch = self._take(queue, seq_len)
                if batch:
                    self._start_batch(batch, seq_len)

    def _take(self, queue: deque[_Pending], seq_len: int) -> list[_Pending]:
        """Pop one batch from a bucket, dropping texts whose deadline already passed."""
        limit = min(self.config.max_batch_size, max(1, self.config.max_batch_tokens // seq_len))
        now = time.monotonic()
        batch: list[_Pending] = []
        while queue and len(batch) < limit:
            pending = queue.popleft()
            self._queued -= 1
            if pending.deadline <= now:
                self.metrics.rejected.labels("deadline_in_queue").inc()
                self._finish(pending, exc=DeadlineExceeded("deadline passed while queued"))
                continue
            batch.append(pending)
        self.metrics.queue_depth.set(self._queued)
        return batch

    # ---- inference -------------------------------------------------------------------------

    def _start_batch(self, batch: list[_Pending], seq_len: int) -> None:
        self._running_batches += 1
        task = asyncio.create_task(self._run_batch(batch, seq_len))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_batch(self, batch: list[_Pending], seq_len: int) -> None:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        real_tokens = sum(min(len(p.ids), seq_len) for p in batch)
        self.metrics.batch_size.observe(len(batch))
        self.metrics.batch_tokens.observe(len(batch) * seq_len)
        self.metrics.padding_waste.observe(1.0 - real_tokens / (len(batch) * seq_len))
        try:
            call = loop.run_in_executor(self._executor, self._infer_live, batch, seq_len)
            live, vectors = await asyncio.wait_for(call, timeout=self.config.inference_timeout_s)
        except asyncio.TimeoutError:
            self._mark_dead("an inference call hung")
            for pending in batch:
                self._finish(pending, exc=Unavailable("inference backend is not available"))
        except Exception:  # the model failed on this batch: fail it, keep serving, probe health
            log.exception("inference failed for a batch of %d", len(batch))
            for pending in batch:
                self._finish(pending, exc=InferenceFailed("the encoder failed on this request"))
            self._probe_soon()
        else:
            encode_s = time.monotonic() - started
            self.metrics.stage_latency.labels("encode").observe(encode_s)
            for pending in batch:
                if pending not in live:
                    self.metrics.rejected.labels("deadline_in_queue").inc()
                    self._finish(pending, exc=DeadlineExceeded("deadline passed while queued"))
            for pending, vector in zip(live, vectors):
                if pending.cacheable:
                    self.cache.put(pending.text, vector)
                self._finish(pending, result=(vector, EmbedTiming(started - pending.enqueued, encode_s)))
        finally:
            self._running_batches -= 1
            if self._wake is not None:
                self._wake.set()
            self._release_when_idle()

    # ---- memory ----------------------------------------------------------------------------

    async def release_memory(self) -> None:
        """The backend's idle buffers back to the OS, on the inference thread (after warm-up)."""
        release = getattr(self.backend, "release_memory", None)
        if release is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, release)

    def _release_when_idle(self) -> None:
        """After each batch: note when it ended. One timer, armed only if none is pending, so a
        batch costs a float store; the timer re-arms itself while batches keep coming."""
        loop = asyncio.get_running_loop()
        self._last_batch_end = loop.time()
        if self.config.idle_release_s > 0 and self._release_timer is None and self._wake is not None:
            self._release_timer = loop.call_later(self.config.idle_release_s, self._release_if_idle)

    def _release_if_idle(self) -> None:
        self._release_timer = None
        if self._running_batches or self._queued or self.dead_reason is not None:
            return  # a batch is running or due: its end arms the timer again
        loop = asyncio.get_running_loop()
        wait = self._last_batch_end + self.config.idle_release_s - loop.time()
        if wait > 0:  # a batch ended since the timer was armed: the gap starts there
            self._release_timer = loop.call_later(wait, self._release_if_idle)
            return
        task = asyncio.create_task(self._release_logged())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _release_logged(self) -> None:
        try:
            await self.release_memory()
        except Exception:  # noqa: BLE001 - keeping the buffers is harmless; inference goes on
            log.warning("could not release the encoder's idle buffers", exc_info=True)

    def _infer_live(self, batch: list[_Pending], seq_len: int) -> tuple[list[_Pending], np.ndarray]:
        """Worker thread: a ready batch may have waited for the worker, so drop what expired."""
        now = time.monotonic()
        live = [p for p in batch if p.deadline > now]
        if not live:
            return live, np.empty((0, self.backend.dim), np.float32)
        return live, self.backend.infer([p.ids for p in live], seq_len)

    def _finish(self, pending: _Pending, *, result=None, exc: Exception | None = None) -> None:
        if self._in_flight.get(pending.text) is pending:
            del self._in_flight[pending.text]
        if pending.future.done():
            return
        if exc is not None:
            pending.future.set_exception(exc)
            pending.future.exception()  # mark retrieved: nobody may be waiting any more
        else:
            pending.future.set_result(result)

    # ---- health ----------------------------------------------------------------------------

    def _probe_soon(self) -> None:
        """After a failed batch: health NOT_SERVING until a real inference succeeds again."""
        self._set_health(False)
        task = asyncio.create_task(self._probe())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _probe(self) -> None:
        if await self._probe_once():
            if self.dead_reason is None:
                self._set_health(True)
        else:
            self._mark_dead("the inference health probe failed")

    async def _probe_once(self) -> bool:
        """One real inference on the inference thread (queued behind a hung call, if any)."""
        loop = asyncio.get_running_loop()
        try:
            ids = self.backend.tokenize("health probe")
            call = loop.run_in_executor(self._executor, self.backend.infer, [ids], bucket_length(len(ids)))
            await asyncio.wait_for(call, timeout=self.config.inference_timeout_s)
            return True
        except Exception:  # noqa: BLE001 - any failure of the probe means the backend is down
            return False

    async def _recover(self) -> None:
        """Probe a dead backend with backoff until a probe succeeds; then it serves again."""
        delay = self.config.probe_backoff_s
        while self.dead_reason is not None:
            await asyncio.sleep(delay)
            if await self._probe_once():
                log.warning("inference backend recovered (was dead: %s)", self.dead_reason)
                self.dead_reason = None
                self._set_health(True)
                return
            delay = min(delay * 2, self.config.probe_backoff_max_s)

    def _mark_dead(self, reason: str) -> None:
        log.error("inference backend marked dead: %s", reason)
        self.dead_reason = reason
        self._set_health(False)
        self._fail_queued(Unavailable("inference backend is not available"))
        if reason != "the batch loop crashed" and (self._recovery is None or self._recovery.done()):
            self._recovery = asyncio.get_running_loop().create_task(self._recover())
            self._tasks.add(self._recovery)
            self._recovery.add_done_callback(self._tasks.discard)

    def _on_loop_exit(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("batch loop crashed", exc_info=task.exception())
            self._mark_dead("the batch loop crashed")

    def _fail_queued(self, exc: Exception) -> None:
        for queue in self._buckets.values():
            while queue:
                self._finish(queue.popleft(), exc=exc)
        self._queued = 0
        self.metrics.queue_depth.set(0)

    def _set_health(self, healthy: bool) -> None:
        if healthy != self.healthy:
            self.healthy = healthy
            self.metrics.backend_healthy.set(1 if healthy else 0)
            if self._on_health_change is not None:
                self._on_health_change(healthy)
