"""RecentRequests: the idempotency keys of recent writes, so a retried write applies once.

A client that lost the answer to a write retries it with the same `request_id`. The key is
logged with the write (server/live/wal.py), and every applier records it here when it applies
the write, so any serving process (and a restarted one) answers the retry with the first
attempt's sequence and applies nothing. Keys are kept for a time window and up to a count;
on recovery the window is rebuilt from the log (a snapshot does not carry it).
"""

from __future__ import annotations

import time
from collections import OrderedDict


class RecentRequests:
    def __init__(self, window_s: float, max_ids: int) -> None:
        self.window_s, self.max_ids = window_s, max(1, max_ids)
        self._seen: OrderedDict[str, tuple[int, float]] = OrderedDict()  # id -> (seq, received_at)

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, request_id: str, seq: int, received_at: float) -> None:
        if not request_id or request_id in self._seen:
            return  # the first write with a key is the one a retry must see
        self._seen[request_id] = (seq, received_at)
        while len(self._seen) > self.max_ids:
            self._seen.popitem(last=False)

    def sequence_of(self, request_id: str, now: float | None = None) -> int | None:
        """The sequence of the earlier write with this key, if it is within the window."""
        if not request_id:
            return None
        self._expire(time.time() if now is None else now)
        found = self._seen.get(request_id)
        return found[0] if found is not None else None

    def load(self, entries: list[tuple[str, int, float]]) -> None:
        """(request_id, seq, received_at) read from the log, oldest first."""
        for request_id, seq, received_at in entries:
            self.add(request_id, seq, received_at)

    def _expire(self, now: float) -> None:
        oldest = now - self.window_s
        while self._seen:
            _, (_, received_at) = next(iter(self._seen.items()))
            if received_at >= oldest:
                return
            self._seen.popitem(last=False)
