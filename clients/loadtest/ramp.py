"""Ramp mode: open-loop steps of rising offered rate, to find the maximum sustainable rate.

A step is sustained when the generator kept its rate, p99 stayed under the target and fewer
than 0.1% of calls failed. The answer is the highest sustained offered rate. The ramp stops
after two failed steps in a row (the server is past its limit) or as soon as the generator
itself cannot keep a step's rate (higher steps would measure the generator, not the server).
"""

from __future__ import annotations

from collections.abc import Callable

MAX_ERROR_RATE = 0.001
STOP_AFTER_FAILED_STEPS = 2


def parse_ramp(text: str) -> list[float]:
    """'100:1000:100' -> [100, 200, ..., 1000] (R1 included when the steps land on it)."""
    try:
        start, stop, step = (float(part) for part in text.split(":"))
    except ValueError:
        raise ValueError(f"--ramp wants R0:R1:STEP, got {text!r}") from None
    if start <= 0 or step <= 0 or stop < start:
        raise ValueError(f"--ramp {text!r}: need 0 < R0 <= R1 and STEP > 0")
    count = int((stop - start) / step + 1e-9) + 1
    return [round(start + i * step, 6) for i in range(count)]


def judge_step(phase: dict, p99_target_ms: float) -> tuple[bool, str]:
    """(sustained?, why not) for one step's phase summary."""
    p99 = phase["latency_ms"]["p99"]
    if not phase["generator_kept_up"]:
        return False, "generator could not keep the rate"
    if phase["error_rate"] >= MAX_ERROR_RATE:
        return False, f"errors {phase['error_rate']:.2%} >= {MAX_ERROR_RATE:.1%}"
    if p99 is None or p99 > p99_target_ms:
        return False, f"p99 {p99} ms > {p99_target_ms:g} ms"
    return True, ""


def run_ramp(rates: list[float], run_step: Callable[[float], dict], p99_target_ms: float) -> dict:
    """Run steps in order with `run_step(rate) -> phase summary`; return the ramp verdict."""
    steps, failed_in_a_row, stopped = [], 0, "all steps run"
    for rate in rates:
        phase = run_step(rate)
        sustained, reason = judge_step(phase, p99_target_ms)
        phase["sustained"], phase["not_sustained_because"] = sustained, reason
        steps.append(phase)
        if not phase["generator_kept_up"]:
            stopped = f"stopped at {rate:g}/s: the load generator could not keep that rate"
            break
        failed_in_a_row = 0 if sustained else failed_in_a_row + 1
        if failed_in_a_row >= STOP_AFTER_FAILED_STEPS:
            stopped = f"stopped at {rate:g}/s after {STOP_AFTER_FAILED_STEPS} failed steps in a row"
            break
    return {"steps": steps, **ramp_verdict(steps, p99_target_ms), "stopped": stopped}


def ramp_verdict(steps: list[dict], p99_target_ms: float) -> dict:
    passed = [s for s in steps if s["sustained"]]
    best = max(passed, key=lambda s: s["offered_rate"]) if passed else None
    return {
        "p99_target_ms": p99_target_ms,
        "max_error_rate": MAX_ERROR_RATE,
        "max_sustainable_rate": best["offered_rate"] if best else None,
        "throughput_at_max": best["throughput_ok"] if best else None,
        "p99_at_max_ms": best["latency_ms"]["p99"] if best else None,
    }
