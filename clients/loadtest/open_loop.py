"""Open-loop load: Poisson arrivals at a fixed rate, whatever the server's answers do.

Each call's latency is measured from its *scheduled* send time, so when the server (or this
generator) falls behind, the wait shows up in the latencies instead of silently lowering the
offered load (coordinated omission). In-flight calls are capped to bound memory; a send
held back by the cap is late, and lateness is recorded and reported.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import numpy as np

from clients.loadtest.records import NO_TIMINGS, Recorder

# (request index) -> (status code number, server timings)
Call = Callable[[int], Awaitable[tuple[int, tuple[int, int, int, int, int]]]]
CANCELLED = 1  # grpc.StatusCode.CANCELLED: still in flight when the drain gave up


def poisson_schedule(rate: float, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """Arrival offsets (seconds) of a Poisson process of `rate` per second over `duration_s`."""
    if rate <= 0 or duration_s <= 0:
        return np.zeros(0)
    expected = rate * duration_s
    draws = int(expected + 6 * np.sqrt(expected) + 16)
    offsets = np.cumsum(rng.exponential(1.0 / rate, size=draws))
    while offsets[-1] < duration_s:  # vanishingly rare; keep the process honest anyway
        offsets = np.concatenate([offsets, offsets[-1] + np.cumsum(rng.exponential(1.0 / rate, draws))])
    return offsets[offsets < duration_s]


async def run_open_loop(call: Call, picks: np.ndarray, kinds: np.ndarray, *, offsets: np.ndarray,
                        start_at: float, recorder: Recorder, max_in_flight: int,
                        drain_s: float) -> None:
    """Send request `picks[i]` at `start_at + offsets[i]` (time.monotonic clock)."""
    slots = asyncio.Semaphore(max_in_flight)
    in_flight: set[asyncio.Task] = set()

    async def one(request: int, scheduled: float) -> None:
        sent = time.monotonic()
        recorder.sent()
        try:
            code, timings = await call(request)
        except asyncio.CancelledError:
            recorder.add(int(kinds[request]), scheduled, sent, time.monotonic(), CANCELLED, NO_TIMINGS)
            raise
        finally:
            slots.release()
        recorder.add(int(kinds[request]), scheduled, sent, time.monotonic(), code, timings)

    for i, offset in enumerate(offsets):
        scheduled = start_at + offset
        delay = scheduled - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif i % 32 == 0:
            await asyncio.sleep(0)  # behind schedule: still let answers in
        await slots.acquire()
        task = asyncio.create_task(one(int(picks[i]), scheduled))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    await drain(in_flight, drain_s)


async def drain(in_flight: set[asyncio.Task], timeout_s: float) -> None:
    """Wait for the calls still out; cancel (and so record) any that outlive `timeout_s`."""
    if not in_flight:
        return
    _, pending = await asyncio.wait(set(in_flight), timeout=timeout_s)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
