"""Closed-loop load: C callers, each sending its next request as soon as the last one returns.

Throughput then depends on latency, so a slow server is offered less load; latencies here
are per call (from the actual send) and the report says so. Use open loop to measure
latency under a given load, closed loop to find what C callers can get through.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import numpy as np

from clients.loadtest.open_loop import Call
from clients.loadtest.records import Recorder


async def run_closed_loop(call: Call, picks: Iterator[int], kinds: np.ndarray, *, concurrency: int,
                          start_at: float, duration_s: float, recorder: Recorder) -> None:
    """`concurrency` callers from `start_at` (time.monotonic clock) for `duration_s`."""
    delay = start_at - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
    end = start_at + duration_s

    async def caller() -> None:
        while (sent := time.monotonic()) < end:
            request = next(picks)
            recorder.sent()
            code, timings = await call(request)
            recorder.add(int(kinds[request]), sent, sent, time.monotonic(), code, timings)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
