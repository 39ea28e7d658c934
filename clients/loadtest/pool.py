"""The parent's side of the worker processes: start them once, run phases, gather records.

Workers are spawned (not forked: the parent may already hold gRPC state) and kept for the
whole test, so ramp steps do not pay process start-up. All workers of a phase start at one
shared time.monotonic() instant, a little in the future.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.connection import wait

from clients.loadtest.records import CallRecords
from clients.loadtest.worker import PhaseSpec, WorkerSetup, worker_main

START_LEAD_S = 0.3
STARTUP_TIMEOUT_S = 60.0


class LoadtestError(RuntimeError):
    """The load generator itself failed (a worker died or did not start)."""


@dataclass
class PhaseOutcome:
    records: CallRecords
    worker_cpu_s: list[float]
    workers_used: int
    error_details: dict[tuple[int, str], int]
    """(status code number, details text) -> count, over all workers."""


def default_worker_count() -> int:
    """One worker per CPU this process may use, at most 8."""
    return max(1, min(len(os.sched_getaffinity(0)), 8))


def split_evenly(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class WorkerPool:
    def __init__(self, setup: WorkerSetup, workers: int) -> None:
        self.size = workers
        self._context = multiprocessing.get_context("spawn")
        # [sent, done, errors] per worker, written by workers, read by the progress display.
        self.counters = self._context.Array("q", 3 * workers, lock=False)
        self._conns = []
        self._processes = []
        for slot in range(workers):
            parent_end, child_end = self._context.Pipe()
            worker_setup = replace(setup, seed=setup.seed * 1000 + slot)
            process = self._context.Process(target=worker_main, daemon=True,
                                            args=(child_end, worker_setup, self.counters, slot))
            process.start()
            self._conns.append(parent_end)
            self._processes.append(process)
        self.ready = [self._receive(conn, "ready", STARTUP_TIMEOUT_S)[1] for conn in self._conns]

    @property
    def connected(self) -> bool:
        return all(info["connected"] for info in self.ready)

    def totals(self) -> tuple[int, int, int]:
        """(sent, done, errors) over all workers, for the progress display."""
        c = self.counters[:]
        return sum(c[0::3]), sum(c[1::3]), sum(c[2::3])

    def run_phase(self, *, mode: str, duration_s: float, deadline_s: float, rate: float = 0.0,
                  concurrency: int = 0, max_in_flight: int = 10_000,
                  on_tick: Callable[[float], None] | None = None) -> PhaseOutcome:
        """Run one phase on every worker; `on_tick(elapsed_s)` is called about 10 times a second."""
        for i in range(len(self.counters)):
            self.counters[i] = 0
        start_at = time.monotonic() + START_LEAD_S
        shares = self._shares(mode, rate, concurrency)
        in_flight_share = max(1, max_in_flight // max(1, len(shares)))
        for conn, share in zip(self._conns, shares):
            spec = PhaseSpec(mode=mode, start_at=start_at, duration_s=duration_s, deadline_s=deadline_s,
                             rate=share if mode == "open" else 0.0,
                             concurrency=int(share) if mode == "closed" else 0,
                             max_in_flight=in_flight_share)
            conn.send(("phase", spec))
        busy = self._conns[:len(shares)]
        results: dict[int, tuple] = {}
        limit = start_at + duration_s + deadline_s + 30.0
        while len(results) < len(busy):
            for conn in wait([c for i, c in enumerate(busy) if i not in results], timeout=0.1):
                results[busy.index(conn)] = self._receive(conn, "records", 0)
            if on_tick:
                on_tick(max(0.0, time.monotonic() - start_at))
            if time.monotonic() > limit:
                raise LoadtestError("workers did not finish the phase in time")
            self._check_alive()
        parts = [CallRecords(**results[i][1]) for i in range(len(busy))]
        details: Counter = Counter()
        for i in range(len(busy)):
            details.update(results[i][3])
        return PhaseOutcome(CallRecords.concat(parts), [results[i][2] for i in range(len(busy))],
                            len(busy), dict(details))

    def _shares(self, mode: str, rate: float, concurrency: int) -> list[float]:
        """Each busy worker's rate or callers; idle workers are left out (no zero-rate phases)."""
        if mode == "open":
            return [rate / self.size] * self.size
        counts = split_evenly(concurrency, self.size)
        return [float(c) for c in counts if c > 0]

    def _receive(self, conn, expected: str, timeout_s: float) -> tuple:
        if timeout_s and not conn.poll(timeout_s):
            raise LoadtestError(f"a load worker sent no {expected!r} within {timeout_s:.0f}s")
        message = conn.recv()
        if message[0] == "error":
            raise LoadtestError(f"a load worker failed:\n{message[1]}")
        if message[0] != expected:
            raise LoadtestError(f"a load worker sent {message[0]!r}, expected {expected!r}")
        return message

    def _check_alive(self) -> None:
        dead = [p.pid for p in self._processes if not p.is_alive()]
        for conn, process in zip(self._conns, self._processes):
            if not process.is_alive() and conn.poll():
                self._receive(conn, "records", 0)  # raises with the worker's own traceback
        if dead:
            raise LoadtestError(f"load worker process(es) {dead} exited during the phase")

    def close(self) -> None:
        for conn, process in zip(self._conns, self._processes):
            if process.is_alive():
                try:
                    conn.send(("stop",))
                except (BrokenPipeError, OSError):
                    pass
        for process in self._processes:
            process.join(5)
            if process.is_alive():
                process.terminate()
                process.join(2)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
