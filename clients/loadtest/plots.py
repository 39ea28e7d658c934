"""PNG plots of a load test: latency over time, and (ramp) latency percentiles vs offered rate."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clients.loadtest.records import CallRecords

MAX_POINTS = 20_000  # scatter points per plot; more only blurs the picture and slows it down


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def plot_latency_over_time(phases: list[dict], records: list[CallRecords], path: Path) -> Path:
    """Every call's latency by scheduled send time (phases laid end to end), per-second p50/p99,
    failed calls marked, and below it the per-second sent / OK / error counts."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1.3]})
    offset = 0.0
    rng = np.random.default_rng(0)
    for phase, rec in zip(phases, records):
        ok = rec.ok
        keep = np.arange(len(rec))
        if len(keep) > MAX_POINTS // max(len(phases), 1):
            keep = np.sort(rng.choice(keep, MAX_POINTS // max(len(phases), 1), replace=False))
        sample = rec.take(keep)
        top.scatter(offset + sample.scheduled[sample.ok], sample.latency[sample.ok] * 1000, s=2,
                    alpha=0.25, color="tab:blue", rasterized=True)
        if (~ok).any():
            failed = sample.take(np.flatnonzero(~sample.ok))
            top.scatter(offset + failed.scheduled, failed.latency * 1000, s=8, marker="x",
                        color="tab:red", label=None)
        line = phase["timeline"]
        t = offset + np.array(line["t_s"]) + line["bin_s"] / 2
        for key, color in (("p50_ms", "tab:green"), ("p99_ms", "tab:orange")):
            top.plot(t, [np.nan if v is None else v for v in line[key]], color=color)
        for key, color in (("sent_per_s", "tab:gray"), ("ok_per_s", "tab:blue"),
                           ("errors_per_s", "tab:red")):
            bottom.plot(t, line[key], color=color)
        if len(phases) > 1:
            top.axvline(offset, color="lightgray", lw=0.8)
            top.text(offset, 1.0, f" {phase['name']}", transform=top.get_xaxis_transform(),
                     va="bottom", fontsize=7, rotation=30)
        offset += phase["duration_s"]
    top.set_yscale("log")
    top.set_ylabel("latency (ms, from scheduled send)")
    top.legend(handles=_legend(plt, [("tab:blue", "OK call", "o"), ("tab:red", "failed call", "x"),
                                     ("tab:green", "p50 per time bin"), ("tab:orange", "p99 per time bin")]),
               loc="upper left", fontsize=8)
    bottom.set_ylabel("calls per second")
    bottom.set_xlabel("seconds since the phase start" if len(phases) == 1
                      else "seconds (phases laid end to end)")
    bottom.legend(handles=_legend(plt, [("tab:gray", "sent"), ("tab:blue", "OK"), ("tab:red", "errors")]),
                  loc="upper left", fontsize=8)
    fig.suptitle("recserve loadtest: latency over time")
    return _save(fig, plt, path)


def plot_ramp(ramp: dict, path: Path) -> Path:
    """Latency percentiles and achieved throughput against the offered rate of each step."""
    plt = _pyplot()
    steps = ramp["steps"]
    offered = [s["offered_rate"] for s in steps]
    fig, (lat, thr) = plt.subplots(1, 2, figsize=(12, 5))
    for key, color in (("p50", "tab:green"), ("p90", "tab:blue"), ("p99", "tab:orange"),
                       ("p99.9", "tab:red")):
        values = [s["latency_ms"][key] if s["latency_ms"][key] is not None else np.nan for s in steps]
        lat.plot(offered, values, marker="o", color=color, label=key)
    lat.axhline(ramp["p99_target_ms"], color="black", ls="--", lw=1,
                label=f"p99 target {ramp['p99_target_ms']:g} ms")
    best = ramp["max_sustainable_rate"]
    for ax in (lat, thr):
        if best is not None:
            ax.axvline(best, color="tab:purple", ls=":", label=f"max sustainable {best:g}/s")
    lat.set_yscale("log")
    lat.set_xlabel("offered rate (requests/s)")
    lat.set_ylabel("latency (ms, from scheduled send)")
    lat.legend(fontsize=8)
    thr.plot(offered, offered, color="lightgray", ls="--", label="offered")
    thr.plot(offered, [s["sent_rate"] for s in steps], marker="o", color="tab:gray", label="sent within the step")
    thr.plot(offered, [s["throughput_ok"] for s in steps], marker="o", color="tab:blue", label="OK/s")
    thr.set_xlabel("offered rate (requests/s)")
    thr.set_ylabel("requests/s")
    thr.legend(fontsize=8)
    fig.suptitle("recserve loadtest ramp: latency and throughput vs offered rate")
    return _save(fig, plt, path)


def _legend(plt, entries):
    """Legend handles: (colour, label) for a line, (colour, label, marker) for scattered points."""
    from matplotlib.lines import Line2D

    handles = []
    for color, label, *marker in entries:
        style = {"marker": marker[0], "linestyle": ""} if marker else {}
        handles.append(Line2D([0], [0], color=color, label=label, **style))
    return handles


def _save(fig, plt, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
