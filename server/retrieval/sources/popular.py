"""Popular and trending sources: the items with the highest time-decayed popularity (long
half-life) or trending score (short half-life, "popular this week") that pass the filters.

The order is sorted once and re-sorted at most every `refresh_s` (live events change the
scores in place), so a request walks a prefix of it instead of sorting the catalog; an
attribute filter (its mask is computed anyway) picks the top of the allowed items directly.
A bundle without interactions (all scores 0) still answers, in catalog order: a new user
with no query and no history gets items rather than nothing.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from server.retrieval.sources.base import SourceContext, SourceList


class RankedItemsSource:
    def __init__(self, name: str, scores: Callable[[], np.ndarray], refresh_s: float = 10.0) -> None:
        self.name = name
        self._scores = scores  # the table may be replaced (grown) by live writes: read it late
        self.refresh_s = refresh_s
        self._order = np.empty(0, np.int64)
        self._sorted_at = -np.inf

    def active(self, context: SourceContext) -> bool:
        return len(self._scores()) > 0

    def order(self) -> np.ndarray:
        now = time.monotonic()
        if now - self._sorted_at > self.refresh_s:
            scores = self._scores()
            order = np.argsort(-scores, kind="stable")
            positive = order[scores[order] > 0]
            self._order = positive if len(positive) else order
            self._sorted_at = now
        return self._order

    def find(self, context: SourceContext, quota: int) -> SourceList:
        if context.gate.filter.restricts_attributes:
            return self._top_of_allowed(context, quota)
        order, scores = self.order(), self._scores()
        kept, start, step = [], 0, max(4 * quota, 64)
        found = 0
        while start < len(order) and found < quota:
            chunk = order[start:start + step]
            chunk = chunk[context.gate.keep(chunk)]
            kept.append(chunk)
            found += len(chunk)
            start, step = start + step, step * 4
        labels = np.concatenate(kept)[:quota] if kept else np.empty(0, np.int64)
        values = scores[labels].astype(np.float32)
        order = np.lexsort((labels, -values))  # live changes since the last sort
        return SourceList(labels[order], values[order])

    def _top_of_allowed(self, context: SourceContext, quota: int) -> SourceList:
        scores = self._scores()
        allowed = np.flatnonzero(context.gate.mask()[: len(scores)])
        allowed = allowed[context.gate.keep(allowed)]  # exclusions
        values = scores[allowed]
        if len(allowed) > quota:
            top = np.argpartition(-values, quota - 1)[:quota]
            allowed, values = allowed[top], values[top]
        order = np.lexsort((allowed, -values))
        return SourceList(allowed[order].astype(np.int64), values[order].astype(np.float32))
