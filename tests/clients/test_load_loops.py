"""The open- and closed-loop schedulers with a fake call (no network): arrivals, coordinated
omission, late sends, in-flight caps, concurrency."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from clients.loadtest.closed_loop import run_closed_loop
from clients.loadtest.open_loop import poisson_schedule, run_open_loop
from clients.loadtest.records import Recorder
from clients.loadtest.report import summarize_phase

TIMINGS = (10, 20, 30, 40, 100)
KINDS = np.zeros(1, np.int8)


def test_poisson_schedule_has_the_rate_and_exponential_gaps():
    rng = np.random.default_rng(1)
    offsets = poisson_schedule(2000.0, 10.0, rng)
    assert abs(len(offsets) - 20_000) < 4 * np.sqrt(20_000)
    assert offsets.min() >= 0 and offsets.max() < 10.0 and (np.diff(offsets) >= 0).all()
    gaps = np.diff(offsets)
    assert gaps.mean() == pytest.approx(1 / 2000, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)  # exponential: CV = 1


async def _open_loop(call, rate, duration_s, max_in_flight=10_000):
    rng = np.random.default_rng(0)
    offsets = poisson_schedule(rate, duration_s, rng)
    start = time.monotonic() + 0.05
    recorder = Recorder(start)
    await run_open_loop(call, np.zeros(len(offsets), int), KINDS, offsets=offsets, start_at=start,
                        recorder=recorder, max_in_flight=max_in_flight, drain_s=5.0)
    return recorder.records(), len(offsets)


async def test_a_server_stall_shows_in_latency_and_does_not_slow_the_arrivals():
    start = time.monotonic() + 0.05

    async def call(_):
        stalled = 0.3 <= time.monotonic() - start < 0.6
        await asyncio.sleep(0.3 if stalled else 0.002)
        return 0, TIMINGS

    records, scheduled = await _open_loop(call, rate=300, duration_s=1.0)
    assert len(records) == scheduled
    in_stall = (records.scheduled >= 0.32) & (records.scheduled < 0.58)
    assert in_stall.sum() == pytest.approx(300 * 0.26, rel=0.35)  # still sent at the offered rate
    assert (records.lateness < 0.02).mean() > 0.95  # the generator itself kept up
    assert np.median(records.latency[in_stall]) > 0.25
    assert np.percentile(records.latency, 99) > 0.25


async def test_a_generator_stall_is_counted_late_and_charged_to_latency():
    first = True

    async def call(_):
        nonlocal first
        if first:
            first = False
            time.sleep(0.25)  # blocks the event loop: nothing else can be sent meanwhile
        return 0, TIMINGS

    records, _ = await _open_loop(call, rate=200, duration_s=1.0)
    late = records.lateness > 0.01
    assert late.sum() >= 20
    assert records.lateness.max() > 0.15
    assert (records.latency[late] >= records.lateness[late]).all()
    phase = summarize_phase(records, name="200/s", mode="open", duration_s=1.0, workers=1,
                            worker_cpu_s=[0.3], offered_rate=200)
    assert phase["late_sends"] == int(late.sum())
    assert any("late" in w for w in phase["warnings"])


async def test_an_in_flight_cap_that_holds_sends_back_is_reported_as_not_achieved():
    async def call(_):
        await asyncio.sleep(0.02)  # with 2 in flight: at most 100 sends/s
        return 0, TIMINGS

    records, scheduled = await _open_loop(call, rate=300, duration_s=0.5, max_in_flight=2)
    assert len(records) == scheduled  # every scheduled call was still sent, late
    phase = summarize_phase(records, name="300/s", mode="open", duration_s=0.5, workers=1,
                            worker_cpu_s=[0.1], offered_rate=300)
    assert phase["generator_kept_up"] is False
    assert phase["sent_rate"] < 0.5 * phase["scheduled_rate"]
    assert phase["warnings"][0].startswith("OFFERED RATE NOT ACHIEVED")


async def test_closed_loop_keeps_exactly_c_calls_outstanding():
    in_flight = peak = 0

    async def call(_):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return 0, TIMINGS

    start = time.monotonic() + 0.02
    recorder = Recorder(start)
    picks = iter(lambda: 0, 1)
    await run_closed_loop(call, picks, KINDS, concurrency=3, start_at=start, duration_s=0.5,
                          recorder=recorder)
    records = recorder.records()
    assert peak == 3
    assert 3 * 0.5 / 0.02 * 0.6 < len(records) <= 3 * 0.5 / 0.02 + 3
    assert (records.sent == records.scheduled).all() and (records.sent < 0.5).all()
