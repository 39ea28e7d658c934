"""Users' recent histories: the bundle's table, plus live interactions recorded since.

Reads happen on the event loop for every Recommend, so lookups are dict gets; the live
overlay keeps at most `history_length` events per user (the bundle's manifest says how
many: features.parameters.history_length). Event weights are export.features.EVENT_WEIGHTS,
the table the build used.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass

import numpy as np

from export.features import EVENT_WEIGHTS, NEGATIVE_EVENTS

__all__ = ["EVENT_WEIGHTS", "NEGATIVE_EVENTS", "UserHistories", "UserHistory"]


@dataclass
class UserHistory:
    labels: np.ndarray  # int64, oldest..newest
    timestamps: np.ndarray  # float64 epoch seconds
    disliked: np.ndarray  # int64 labels the user rejected


_EMPTY = np.empty(0, np.int64)


class UserHistories:
    def __init__(
        self,
        bundle_history: dict[str, np.ndarray],
        bundle_timestamps: dict[str, np.ndarray],
        history_length: int = 50,
    ) -> None:
        self._bundle = bundle_history
        self._bundle_ts = bundle_timestamps
        self.history_length = history_length
        self._live: dict[str, deque[tuple[int, float]]] = defaultdict(
            lambda: deque(maxlen=history_length))
        self._disliked: dict[str, set[int]] = defaultdict(set)

    def get(self, user_id: str) -> UserHistory:
        labels = self._bundle.get(user_id, _EMPTY)
        stamps = self._bundle_ts.get(user_id, np.empty(0, np.float64))
        live = self._live.get(user_id)
        if live:
            labels = np.concatenate([labels, np.fromiter((l for l, _ in live), np.int64)])
            stamps = np.concatenate([stamps, np.fromiter((t for _, t in live), np.float64)])
            labels, stamps = labels[-self.history_length:], stamps[-self.history_length:]
        disliked = self._disliked.get(user_id)
        rejected = np.fromiter(disliked, np.int64) if disliked else _EMPTY
        if len(rejected):
            keep = ~np.isin(labels, rejected)
            labels, stamps = labels[keep], stamps[keep]
        return UserHistory(labels, stamps, rejected)

    def record(self, user_id: str, label: int, event: str, timestamp: float) -> None:
        """Apply one live interaction (called by the single writer)."""
        if event in NEGATIVE_EVENTS:
            self._disliked[user_id].add(label)
        else:
            self._live[user_id].append((label, timestamp))
            self._disliked.get(user_id, set()).discard(label)

    # ---- snapshots of the live overlay (server/live/snapshot.py) ---------------------------

    def live_overlay(self) -> dict[str, dict[str, list]]:
        """user -> {"events": [[label, ts], ...], "disliked": [label, ...]} recorded live."""
        users = set(self._live) | set(self._disliked)
        return {u: {"events": [list(e) for e in self._live.get(u, ())],
                    "disliked": sorted(self._disliked.get(u, ()))} for u in users}

    def restore_live_overlay(self, overlay: dict[str, dict[str, list]]) -> None:
        for user, state in overlay.items():
            if state["events"]:
                self._live[user].extend((int(label), float(ts)) for label, ts in state["events"])
            if state["disliked"]:
                self._disliked[user].update(int(label) for label in state["disliked"])
