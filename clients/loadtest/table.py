"""The report as readable rich tables, with its warnings stated plainly."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from clients.loadtest.records import STAGES


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def load_table(report: dict) -> Table:
    table = Table(title=f"recserve loadtest · {report['mode']} · {report['target']}",
                  caption=f"latency from the scheduled send time, OK calls only; workload "
                          f"{report['workload']['source']}", caption_justify="left")
    for header in ("phase", "offered", "sent/s", "OK/s", "p50 ms", "p90 ms", "p99 ms",
                   "p99.9 ms", "errors", "late sends"):
        table.add_column(header, justify="left" if header in ("phase", "errors") else "right")
    for p in report["phases"]:
        offered = f"{p['offered_rate']:g}/s" if p["mode"] == "open" else f"C={p['concurrency']}"
        errors = ", ".join(f"{code} {n}" for code, n in p["errors_by_code"].items()) or "0"
        late = str(p["late_sends"]) if p["mode"] == "open" else "-"
        style = "" if p["generator_kept_up"] else "red"
        if "sustained" in p:
            style = "green" if p["sustained"] else "yellow"
        lat = p["latency_ms"]
        table.add_row(p["name"], offered, f"{p['sent_rate']:g}", f"{p['throughput_ok']:g}",
                      _ms(lat["p50"]), _ms(lat["p90"]), _ms(lat["p99"]), _ms(lat["p99.9"]),
                      errors, late, style=style)
    return table


def stage_table(report: dict) -> Table:
    table = Table(title="server's own timings per stage (ms, p50 / p99, from RecommendResponse.timings)")
    table.add_column("phase")
    for stage in STAGES:
        table.add_column(stage, justify="right")
    table.add_column("client+network p50", justify="right")
    for p in report["phases"]:
        t = p["server_timings_ms"]
        cells = [f"{_ms(t[s]['p50'])} / {_ms(t[s]['p99'])}" for s in STAGES]
        service, server = p["service_latency_ms"]["p50"], t["total"]["p50"]
        overhead = None if service is None or server is None else max(service - server, 0.0)
        table.add_row(p["name"], *cells, _ms(overhead))
    return table


def print_report(report: dict, console: Console) -> None:
    console.print(load_table(report))
    console.print(stage_table(report))
    ramp = report.get("ramp")
    if ramp:
        best = ramp["max_sustainable_rate"]
        if best is None:
            console.print(f"[bold red]No step was sustained[/] (p99 <= {ramp['p99_target_ms']:g} ms, "
                          f"errors < {ramp['max_error_rate']:.1%}); {ramp['stopped']}.")
        else:
            console.print(f"[bold green]Max sustainable rate: {best:g}/s[/] "
                          f"({ramp['throughput_at_max']:g} OK/s, p99 {ramp['p99_at_max_ms']:.1f} ms "
                          f"<= {ramp['p99_target_ms']:g} ms); {ramp['stopped']}.")
    for warning in report["warnings"]:
        console.print(f"[bold red]! {warning}[/]")
    console.print(f"report: {report['files']['report']}  plots: {', '.join(report['files']['plots'])}")
