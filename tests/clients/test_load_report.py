"""Report arithmetic and the ramp's verdict, on records and phases the test makes up."""

from __future__ import annotations

import numpy as np
import pytest

from clients.loadtest.ramp import judge_step, parse_ramp, run_ramp
from clients.loadtest.records import CallRecords
from clients.loadtest.report import summarize_phase


def make_records(n=1000, *, duration_s=1.0, failed_every=0, kinds=2) -> CallRecords:
    scheduled = np.linspace(0, duration_s, n, endpoint=False)
    latency = np.arange(1, n + 1) / 1000.0  # 1..n ms, in a known order
    code = np.zeros(n, np.int16)
    if failed_every:
        code[::failed_every] = 8  # RESOURCE_EXHAUSTED
    server = np.tile(np.array([100, 2000, 300, 400, 2800], np.int64), (n, 1))
    server[code != 0] = 0
    return CallRecords(kind=(np.arange(n) % kinds).astype(np.int8), scheduled=scheduled,
                       sent=scheduled + 0.0001, done=scheduled + latency, code=code, server_us=server)


def test_phase_summary_is_internally_consistent():
    records = make_records(failed_every=10)
    phase = summarize_phase(records, name="1000/s", mode="open", duration_s=1.0, workers=2,
                            worker_cpu_s=[0.2, 0.3], offered_rate=1000.0)
    assert phase["calls"] == 1000 and phase["ok"] + phase["errors"] == phase["calls"]
    assert phase["errors_by_code"] == {"RESOURCE_EXHAUSTED": 100}
    assert phase["error_rate"] == pytest.approx(0.1)
    lat = phase["latency_ms"]
    assert lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    ok_latencies = (np.arange(1, 1001) / 1000.0)[records.code == 0] * 1000
    assert lat["p99"] == pytest.approx(np.percentile(ok_latencies, 99), rel=1e-6)
    assert phase["service_latency_ms"]["p50"] == pytest.approx(lat["p50"] - 0.1, abs=1e-6)
    assert phase["server_timings_ms"]["encode"]["p50"] == 2.0  # failed calls left out
    assert phase["scheduled_rate"] == 1000 and phase["late_sends"] == 0 and phase["generator_kept_up"]
    assert sum(k["calls"] for k in phase["by_kind"].values()) == 1000
    assert set(phase["by_kind"]) == {"text", "user"}
    line = phase["timeline"]
    assert sum(line["sent_per_s"]) * line["bin_s"] == pytest.approx(1000)
    assert sum(line["errors_per_s"]) * line["bin_s"] == pytest.approx(100)
    assert phase["generator"]["cpu_share"] == pytest.approx(0.25)
    assert any("10.00% of calls failed" in w for w in phase["warnings"])


def test_no_success_is_said_plainly():
    records = make_records(n=50, failed_every=1)
    phase = summarize_phase(records, name="c", mode="closed", duration_s=1.0, workers=1,
                            worker_cpu_s=[0.1], concurrency=4)
    assert phase["latency_ms"]["p50"] is None and phase["ok"] == 0
    assert any("no call succeeded" in w for w in phase["warnings"])
    assert phase["scheduled_rate"] is None and phase["generator_kept_up"]


def test_parse_ramp():
    assert parse_ramp("100:500:200") == [100, 300, 500]
    assert parse_ramp("100:550:200") == [100, 300, 500]
    assert parse_ramp("0.5:1:0.25") == [0.5, 0.75, 1.0]
    for bad in ("100:50:10", "100:200", "a:b:c", "0:100:10", "100:200:0"):
        with pytest.raises(ValueError):
            parse_ramp(bad)


def fake_step(rate, *, p99, error_rate=0.0, kept_up=True):
    return {"offered_rate": rate, "throughput_ok": rate * (1 - error_rate), "error_rate": error_rate,
            "latency_ms": {"p99": p99}, "generator_kept_up": kept_up}


def test_ramp_finds_the_highest_sustained_rate_and_stops_after_two_failures():
    p99_by_rate = {100: 10, 200: 20, 300: 45, 400: 60, 500: 300, 600: 900}
    ran = []

    def run_step(rate):
        ran.append(rate)
        return fake_step(rate, p99=p99_by_rate[rate])

    verdict = run_ramp([100, 200, 300, 400, 500, 600], run_step, p99_target_ms=50)
    assert verdict["max_sustainable_rate"] == 300
    assert verdict["p99_at_max_ms"] == 45 and verdict["throughput_at_max"] == 300
    assert ran == [100, 200, 300, 400, 500]  # 400 and 500 failed: 600 is not worth running
    assert [s["sustained"] for s in verdict["steps"]] == [True, True, True, False, False]


def test_ramp_judging_rules():
    assert judge_step(fake_step(100, p99=49), 50) == (True, "")
    assert judge_step(fake_step(100, p99=51), 50)[0] is False
    assert judge_step(fake_step(100, p99=10, error_rate=0.001), 50)[0] is False  # 0.1% is too many
    assert judge_step(fake_step(100, p99=10, error_rate=0.0009), 50)[0] is True
    assert "generator" in judge_step(fake_step(100, p99=10, kept_up=False), 50)[1]


def test_ramp_stops_when_the_generator_cannot_keep_up():
    steps = {100: fake_step(100, p99=5), 200: fake_step(200, p99=5, kept_up=False)}
    verdict = run_ramp([100, 200, 300], steps.__getitem__, p99_target_ms=50)
    assert [s["offered_rate"] for s in verdict["steps"]] == [100, 200]
    assert "generator" in verdict["stopped"] and verdict["max_sustainable_rate"] == 100


def test_ramp_stops_after_two_failed_steps_in_a_row():
    p99 = {100: 5, 200: 80, 300: 90, 400: 5}
    verdict = run_ramp([100, 200, 300, 400], lambda r: fake_step(r, p99=p99[r]), p99_target_ms=50)
    assert [s["offered_rate"] for s in verdict["steps"]] == [100, 200, 300]
    assert verdict["max_sustainable_rate"] == 100 and "2 failed steps" in verdict["stopped"]
