"""What each call did, as flat arrays: cheap to append in a worker and to ship to the parent."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STAGES = ("queue", "encode", "retrieve", "rank", "total")
NO_TIMINGS = (0, 0, 0, 0, 0)
OK = 0


@dataclass
class CallRecords:
    """One row per call; times in seconds from the phase start (a shared monotonic instant)."""

    kind: np.ndarray
    """int8 index into the workload's kind names."""
    scheduled: np.ndarray
    """When the call should have been sent (open loop); equals `sent` in closed loop."""
    sent: np.ndarray
    """When the call was actually sent."""
    done: np.ndarray
    """When the answer (or error) came back."""
    code: np.ndarray
    """gRPC status code number; 0 = OK."""
    server_us: np.ndarray
    """int64 [n, 5]: the server's own timings (STAGES order); zeros for failed calls."""

    def __len__(self) -> int:
        return len(self.code)

    @classmethod
    def empty(cls) -> CallRecords:
        return cls(np.zeros(0, np.int8), np.zeros(0), np.zeros(0), np.zeros(0),
                   np.zeros(0, np.int16), np.zeros((0, len(STAGES)), np.int64))

    @classmethod
    def concat(cls, parts: list[CallRecords]) -> CallRecords:
        parts = [p for p in parts if len(p)] or [cls.empty()]
        merged = cls(*(np.concatenate([getattr(p, f) for p in parts])
                       for f in ("kind", "scheduled", "sent", "done", "code", "server_us")))
        order = np.argsort(merged.scheduled, kind="stable")
        return merged.take(order)

    def take(self, index: np.ndarray) -> CallRecords:
        return CallRecords(self.kind[index], self.scheduled[index], self.sent[index],
                           self.done[index], self.code[index], self.server_us[index])

    @property
    def latency(self) -> np.ndarray:
        """Seconds from the scheduled send to the answer: queueing is never hidden."""
        return self.done - self.scheduled

    @property
    def service_latency(self) -> np.ndarray:
        """Seconds from the actual send to the answer: what the server and network took."""
        return self.done - self.sent

    @property
    def lateness(self) -> np.ndarray:
        """Seconds the generator sent behind schedule."""
        return self.sent - self.scheduled

    @property
    def ok(self) -> np.ndarray:
        return self.code == OK

    def as_arrays(self) -> dict[str, np.ndarray]:
        return {f: getattr(self, f) for f in ("kind", "scheduled", "sent", "done", "code", "server_us")}


class Recorder:
    """Appends calls in a worker and keeps the live counters the progress display reads."""

    def __init__(self, start_at: float, counters=None, slot: int = 0) -> None:
        self.start_at = start_at
        self._rows: list[tuple] = []
        self._counters = counters  # multiprocessing Array('q'): [sent, done, errors] per worker
        self._base = slot * 3

    def sent(self) -> None:
        if self._counters is not None:
            self._counters[self._base] += 1

    def add(self, kind: int, scheduled: float, sent: float, done: float, code: int,
            server_us: tuple[int, int, int, int, int]) -> None:
        s = self.start_at
        self._rows.append((kind, scheduled - s, sent - s, done - s, code, server_us))
        if self._counters is not None:
            self._counters[self._base + 1] += 1
            if code != OK:
                self._counters[self._base + 2] += 1

    def records(self) -> CallRecords:
        if not self._rows:
            return CallRecords.empty()
        kind, scheduled, sent, done, code, server_us = zip(*self._rows)
        return CallRecords(np.array(kind, np.int8), np.array(scheduled), np.array(sent),
                           np.array(done), np.array(code, np.int16),
                           np.array(server_us, np.int64).reshape(-1, len(STAGES)))
