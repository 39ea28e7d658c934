"""Turn call records into the report: rates, latency percentiles, errors, server stage timings.

Rates are per second of the phase's planned duration. Latency percentiles are over OK calls;
in open loop they run from the scheduled send time (`latency_ms`), and `service_latency_ms`
runs from the actual send, so a generator that fell behind is visible as the gap between them.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np

from clients.loadtest.records import STAGES, CallRecords
from clients.loadtest.workload import KINDS

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9}
LATE_SEND_MS = 10.0
"""Default: a send this far behind its scheduled time counts as late (--late-ms)."""
MAX_LATE_SHARE = 0.05
"""More late sends than this share means the generator could not keep the offered rate."""
MIN_SENT_SHARE = 0.95
"""...and so does sending fewer than this share of the scheduled calls within the phase."""
_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def percentiles_ms(seconds: np.ndarray) -> dict[str, float | None]:
    if len(seconds) == 0:
        return {name: None for name in (*PERCENTILES, "mean", "max")}
    values = np.percentile(seconds, list(PERCENTILES.values())) * 1000.0
    out = {name: round(float(v), 3) for name, v in zip(PERCENTILES, values)}
    out["mean"] = round(float(seconds.mean() * 1000.0), 3)
    out["max"] = round(float(seconds.max() * 1000.0), 3)
    return out


def errors_by_code(records: CallRecords) -> dict[str, int]:
    codes, counts = np.unique(records.code[~records.ok], return_counts=True)
    return {_CODE_NAMES.get(int(c), str(int(c))): int(n) for c, n in zip(codes, counts)}


def server_timings_ms(records: CallRecords) -> dict[str, dict[str, float | None]]:
    """The server's own per-stage timings (RecommendResponse.timings) over OK calls."""
    ok = records.server_us[records.ok] / 1e6
    out = {}
    for i, stage in enumerate(STAGES):
        p = percentiles_ms(ok[:, i]) if len(ok) else percentiles_ms(np.zeros(0))
        out[stage] = {"p50": p["p50"], "p99": p["p99"], "mean": p["mean"]}
    return out


def timeline_bin_s(duration_s: float) -> float:
    """Bin width of the timeline: about 1/40 of the phase, at least 0.1 s, at most 1 s."""
    return min(1.0, max(0.1, round(duration_s / 40.0, 1)))


def timeline(records: CallRecords, duration_s: float) -> dict:
    """Columns per time bin (by scheduled send time): rates per second and OK latency p50/p99."""
    bin_s = timeline_bin_s(duration_s)
    bins = np.floor(records.scheduled / bin_s).astype(int)
    latency = records.latency
    columns: dict[str, list] = {k: [] for k in ("t_s", "sent_per_s", "ok_per_s", "errors_per_s",
                                                 "p50_ms", "p99_ms")}
    for b in range(int(np.ceil(duration_s / bin_s - 1e-9))):
        here = bins == b
        ok = here & records.ok
        p = percentiles_ms(latency[ok])
        columns["t_s"].append(round(b * bin_s, 3))
        columns["sent_per_s"].append(round(int(here.sum()) / bin_s, 2))
        columns["ok_per_s"].append(round(int(ok.sum()) / bin_s, 2))
        columns["errors_per_s"].append(round(int((here & ~records.ok).sum()) / bin_s, 2))
        columns["p50_ms"].append(p["p50"])
        columns["p99_ms"].append(p["p99"])
    return {"bin_s": bin_s, **columns}


def summarize_phase(records: CallRecords, *, name: str, mode: str, duration_s: float,
                    workers: int, worker_cpu_s: list[float], offered_rate: float | None = None,
                    concurrency: int | None = None, late_send_ms: float = LATE_SEND_MS,
                    error_details: dict[tuple[int, str], int] | None = None) -> dict:
    n = len(records)
    ok = records.ok
    sent_in_window = int((records.sent <= duration_s).sum())
    late = records.lateness * 1000.0 > late_send_ms
    phase = {
        "name": name,
        "mode": mode,
        "duration_s": duration_s,
        "offered_rate": offered_rate,
        "concurrency": concurrency,
        "calls": n,
        "ok": int(ok.sum()),
        "errors": int(n - ok.sum()),
        "error_rate": round(float((n - ok.sum()) / n), 6) if n else 0.0,
        "errors_by_code": errors_by_code(records),
        "error_details": _details_by_code(error_details or {}),
        "scheduled_rate": round(n / duration_s, 2) if mode == "open" else None,
        "sent_rate": round(sent_in_window / duration_s, 2),
        "throughput_ok": round(int((ok & (records.done <= duration_s)).sum()) / duration_s, 2),
        "late_send_ms": late_send_ms,
        "late_sends": int(late.sum()) if mode == "open" else 0,
        "lateness_ms": percentiles_ms(records.lateness) if mode == "open" else None,
        "latency_ms": percentiles_ms(records.latency[ok]),
        "service_latency_ms": percentiles_ms(records.service_latency[ok]),
        "server_timings_ms": server_timings_ms(records),
        "by_kind": _by_kind(records),
        "generator": {"workers": workers, "cpu_s": [round(c, 3) for c in worker_cpu_s],
                      "cpu_share": round(sum(worker_cpu_s) / (duration_s * max(workers, 1)), 3)},
        "timeline": timeline(records, duration_s),
    }
    reported = sum(phase["error_details"].get("CANCELLED", {}).values())
    phase["cancelled_at_drain"] = max(phase["errors_by_code"].get("CANCELLED", 0) - reported, 0)
    phase["late_share"] = round(phase["late_sends"] / n, 4) if n else 0.0
    phase["generator_kept_up"] = mode != "open" or n == 0 or (
        phase["late_share"] <= MAX_LATE_SHARE and sent_in_window >= MIN_SENT_SHARE * n)
    phase["warnings"] = phase_warnings(phase)
    return phase


def phase_warnings(phase: dict) -> list[str]:
    """Plain statements of what went wrong in a phase: the reader should not have to infer it."""
    notes = []
    if phase["mode"] == "open" and not phase["generator_kept_up"]:
        notes.append(
            f"OFFERED RATE NOT ACHIEVED in phase {phase['name']}: offered {phase['offered_rate']:g}/s "
            f"({phase['scheduled_rate']:g}/s scheduled), the load generator sent "
            f"{phase['sent_rate']:g}/s within the phase; {phase['late_sends']} of {phase['calls']} "
            f"sends were over {phase['late_send_ms']:g} ms late (max {phase['lateness_ms']['max']:.0f} ms). "
            f"Latencies include that delay. {_likely_cause(phase)}")
    elif phase["mode"] == "open" and phase["late_sends"]:
        notes.append(
            f"{phase['name']}: {phase['late_sends']} send(s) ({phase['late_share']:.1%}) over "
            f"{phase['late_send_ms']:g} ms late (max {phase['lateness_ms']['max']:.0f} ms): the generator or "
            "the machine stalled briefly; those latencies include the stall.")
    if phase["calls"] and phase["ok"] == 0:
        notes.append(f"{phase['name']}: no call succeeded ({phase['errors_by_code']}).")
    elif phase["error_rate"] > 0.001:
        notes.append(f"{phase['name']}: {phase['error_rate']:.2%} of calls failed "
                     f"({phase['errors_by_code']}).")
    if phase["generator"]["cpu_share"] > 0.9:
        notes.append(f"{phase['name']}: the load workers were {phase['generator']['cpu_share']:.0%} "
                     "busy; the generator may be the bottleneck.")
    return notes


def _likely_cause(phase: dict) -> str:
    busy = phase["generator"]["cpu_share"]
    if busy >= 0.7:
        return f"The load workers were {busy:.0%} busy: add --workers (and cores to run them)."
    return (f"The load workers were only {busy:.0%} busy, so other processes on this machine "
            "(the server, if it shares the cores) delayed them: pin the generator and the server "
            "to different cores (taskset).")


def _details_by_code(details: dict[tuple[int, str], int]) -> dict[str, dict[str, int]]:
    """{"UNAVAILABLE": {"details text": count}}: what the failures said (up to 20 distinct)."""
    out: dict[str, dict[str, int]] = {}
    for (code, text), count in sorted(details.items(), key=lambda kv: -kv[1]):
        out.setdefault(_CODE_NAMES.get(code, str(code)), {})[text or "(no details)"] = count
    return out


def _by_kind(records: CallRecords) -> dict[str, dict]:
    out = {}
    for i, kind in enumerate(KINDS):
        mine = records.kind == i
        if mine.any():
            ok = mine & records.ok
            p = percentiles_ms(records.latency[ok])
            out[kind] = {"calls": int(mine.sum()), "errors": int((mine & ~records.ok).sum()),
                         "p50_ms": p["p50"], "p99_ms": p["p99"]}
    return out


def write_report(out_dir: Path, report: dict, records: dict[str, CallRecords]) -> Path:
    """report.json, plus every call as records.npz (arrays prefixed by phase index)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    arrays = {f"{i}_{key}": value for i, phase in enumerate(records.values())
              for key, value in phase.as_arrays().items()}
    np.savez_compressed(out_dir / "records.npz", phase_names=np.array(list(records)), **arrays)
    return path
