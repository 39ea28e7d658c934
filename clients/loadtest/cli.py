"""`recserve loadtest`: offer load to a running server and report what it did.

    recserve loadtest --target HOST:PORT (--rate R | --concurrency C | --ramp R0:R1:STEP)
                      [--duration S] [--workload FILE | --source CSV] [--deadline-ms D] --out DIR

Writes DIR/report.json, DIR/records.npz (every call), DIR/latency_over_time.png and, in ramp
mode, DIR/latency_vs_rate.png; prints the report as tables. Exit codes: 0 the test ran and at
least one call succeeded, 1 the server could not be reached or no call succeeded, 2 a usage
mistake (bad flag, workload or mix). See docs/LOADTEST.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from clients.client import RecommenderClient
from clients.errors import DeadlineExceeded, RecommenderError, Unavailable
from clients.loadtest.plots import plot_latency_over_time, plot_ramp
from clients.loadtest.pool import LoadtestError, WorkerPool, default_worker_count
from clients.loadtest.ramp import parse_ramp, run_ramp
from clients.loadtest.records import CallRecords
from clients.loadtest.report import LATE_SEND_MS, summarize_phase, write_report
from clients.loadtest.table import print_report
from clients.loadtest.workload import (
    Workload, WorkloadError, default_workload, load_workload, parse_mix,
)
from clients.loadtest.worker import WorkerSetup
from clients.options import NO_RETRY, ClientOptions, add_connection_arguments, options_from_args

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_argument_group("mode (exactly one)").add_mutually_exclusive_group(required=True)
    mode.add_argument("--rate", type=float, help="open loop: Poisson arrivals at R requests/s")
    mode.add_argument("--concurrency", type=int, help="closed loop: C callers back to back")
    mode.add_argument("--ramp", help="open-loop steps R0:R1:STEP to find the max sustainable rate")
    parser.add_argument("--duration", type=float, default=10.0,
                        help="seconds of load, per step in ramp mode (default %(default)s)")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="seconds of unrecorded load first (default %(default)s)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--workload", help="JSONL(.gz) workload file (default: the packaged one)")
    source.add_argument("--source", help="build the workload from online_retail.csv.gz instead")
    parser.add_argument("--catalog", help="with --source: keep only this catalog's items (CSV, item_id)")
    parser.add_argument("--interactions", help="with --source: users from these events (CSV, user_id)")
    parser.add_argument("--mix", help="re-weight kinds, e.g. text=0.5,user=0.25,history=0.25")
    parser.add_argument("--p99-target-ms", type=float, default=100.0,
                        help="ramp: a step is sustained while p99 <= this (default %(default)s)")
    parser.add_argument("--workers", type=int, default=None,
                        help="load processes (default: CPUs available, at most 8)")
    parser.add_argument("--max-in-flight", type=int, default=10_000,
                        help="cap on outstanding calls; sends held back are counted late")
    parser.add_argument("--late-ms", type=float, default=LATE_SEND_MS,
                        help="a send this far behind schedule counts as late (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of arrivals and request draws")
    parser.add_argument("--no-progress", action="store_true", help="no live progress display")
    parser.add_argument("--out", required=True, help="folder for report.json, records and plots")
    add_connection_arguments(parser, deadline_ms=1000.0)


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    try:
        workload = _workload(args)
        rates = parse_ramp(args.ramp) if args.ramp else None
        _check_numbers(args)
    except (WorkloadError, ValueError) as exc:
        print(f"recserve loadtest: {exc}", file=sys.stderr)
        return EXIT_USAGE
    options = options_from_args(args, retry=NO_RETRY)
    try:
        server = _server_info(options)
    except (Unavailable, DeadlineExceeded) as exc:
        print(f"recserve loadtest: cannot reach {options.target}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    workers = args.workers or default_worker_count()
    if args.concurrency:
        workers = min(workers, args.concurrency)
    setup = WorkerSetup(options, workload.serialized(), workload.weights, workload.kinds, args.seed)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    try:
        with WorkerPool(setup, workers) as pool, _progress(console, args.no_progress) as progress:
            runner = PhaseRunner(pool, progress, args)
            ramp = _run_phases(runner, args, rates)
    except LoadtestError as exc:
        print(f"recserve loadtest: the load generator failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    report = _report(args, options, server, workload, runner, ramp, workers, started, pool.connected)
    print_report(report, Console())
    return EXIT_OK if any(p["ok"] for p in report["phases"]) else EXIT_FAILED


def _run_phases(runner: PhaseRunner, args: argparse.Namespace, rates: list[float] | None) -> dict | None:
    """Warm-up, then the mode's phases; the ramp verdict in ramp mode."""
    if args.warmup > 0:
        first = rates[0] if rates else args.rate
        runner.run("warm-up", first, args.concurrency, args.warmup, keep=False)
    if rates:
        return run_ramp(rates, lambda r: runner.run(f"{r:g}/s", r, None, args.duration),
                        args.p99_target_ms)
    if args.rate:
        runner.run(f"{args.rate:g}/s", args.rate, None, args.duration)
    else:
        runner.run(f"C={args.concurrency}", None, args.concurrency, args.duration)
    return None


class PhaseRunner:
    """Runs phases on the pool with a progress bar each, and keeps what they recorded."""

    def __init__(self, pool: WorkerPool, progress: Progress, args: argparse.Namespace) -> None:
        self.pool, self.progress, self.args = pool, progress, args
        self.phases: list[dict] = []
        self.records: dict[str, CallRecords] = {}

    def run(self, name: str, rate: float | None, concurrency: int | None, duration_s: float,
            keep: bool = True) -> dict:
        task = self.progress.add_task(name, total=duration_s, stats="")

        def tick(elapsed: float) -> None:
            sent, done, errors = self.pool.totals()
            rate_now = done / elapsed if elapsed > 0 else 0.0
            self.progress.update(task, completed=min(elapsed, duration_s),
                                 stats=f"sent {sent} · done {done} · errors {errors} · {rate_now:.0f}/s")

        mode = "open" if rate else "closed"
        outcome = self.pool.run_phase(mode=mode, duration_s=duration_s,
                                      deadline_s=self.args.deadline_ms / 1000.0, rate=rate or 0.0,
                                      concurrency=concurrency or 0,
                                      max_in_flight=self.args.max_in_flight, on_tick=tick)
        self.progress.update(task, completed=duration_s)
        if self.progress.disable:  # no live display (not a terminal): one line per phase instead
            sent, done, errors = self.pool.totals()
            self.progress.console.log(f"{name}: sent {sent}, done {done}, errors {errors}")
        phase = summarize_phase(outcome.records, name=name, mode=mode, duration_s=duration_s,
                                workers=outcome.workers_used, worker_cpu_s=outcome.worker_cpu_s,
                                offered_rate=rate, concurrency=concurrency,
                                late_send_ms=self.args.late_ms,
                                error_details=outcome.error_details)
        if keep:
            self.phases.append(phase)
            self.records[name] = outcome.records
        return phase


def _workload(args: argparse.Namespace) -> Workload:
    if (args.catalog or args.interactions) and not args.source:
        raise WorkloadError("--catalog and --interactions go with --source")
    if args.source:
        from clients.loadtest.retail import build_retail_workload, known_ids

        workload = build_retail_workload(args.source, seed=args.seed, **known_ids(args))
    elif args.workload:
        workload = load_workload(args.workload)
    else:
        workload = default_workload()
    return workload.with_mix(parse_mix(args.mix)) if args.mix else workload


def _check_numbers(args: argparse.Namespace) -> None:
    if args.rate is not None and args.rate <= 0:
        raise ValueError("--rate must be positive")
    if args.concurrency is not None and args.concurrency < 1:
        raise ValueError("--concurrency must be at least 1")
    if args.duration <= 0 or args.warmup < 0 or args.deadline_ms <= 0:
        raise ValueError("--duration and --deadline-ms must be positive, --warmup not negative")
    if args.late_ms <= 0:
        raise ValueError("--late-ms must be positive")
    if args.workers is not None and args.workers < 1:
        raise ValueError("--workers must be at least 1")


def _server_info(options: ClientOptions) -> dict:
    """What the server says it serves; a server that is not there ends the test before it starts."""
    with RecommenderClient(options=options.replace(deadline_s=max(options.deadline_s, 2.0))) as client:
        try:
            info = client.info()
        except (Unavailable, DeadlineExceeded):
            raise
        except RecommenderError as exc:  # e.g. GetInfo not allowed: still load-testable
            return {"error": str(exc)}
    summary = dataclasses.asdict(info)
    summary.pop("manifest")
    return summary


def _progress(console: Console, disabled: bool) -> Progress:
    return Progress(TextColumn("[bold]{task.description:>12}"), BarColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[stats]}"), console=console,
                    disable=disabled or not console.is_terminal, transient=False)


def _report(args, options, server, workload, runner: PhaseRunner, ramp, workers, started,
            connected) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mode = "ramp" if ramp else "open" if args.rate else "closed"
    files = {"report": str(out / "report.json"), "records": str(out / "records.npz"),
             "plots": [str(out / "latency_over_time.png")]}
    report = {
        "format": 1,
        "mode": mode,
        "target": options.target,
        "started_at": started,
        "settings": {"duration_s": args.duration, "warmup_s": args.warmup,
                     "deadline_ms": args.deadline_ms, "max_in_flight": args.max_in_flight,
                     "seed": args.seed, "p99_target_ms": args.p99_target_ms if ramp else None,
                     "tls": options.uses_tls},
        "server": server,
        "workload": workload.summary(),
        "generator": {"workers": workers, "cpus_available": len(os.sched_getaffinity(0)),
                      "late_send_ms": args.late_ms, "connected": connected},
        "phases": runner.phases,
        "warnings": [w for p in runner.phases for w in p["warnings"]],
        "files": files,
    }
    if not connected:
        report["warnings"].insert(0, "some load workers could not connect within 5 s")
    if ramp:
        report["ramp"] = {k: v for k, v in ramp.items() if k != "steps"}
        files["plots"].append(str(out / "latency_vs_rate.png"))
    plot_latency_over_time(runner.phases, list(runner.records.values()), out / "latency_over_time.png")
    if ramp:
        plot_ramp({**report["ramp"], "steps": runner.phases}, out / "latency_vs_rate.png")
    write_report(out, report, runner.records)
    return report
