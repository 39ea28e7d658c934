"""Popular and trending sources: the items with the highest time-decayed popularity (long
half-life) or trending score (short half-life, "popular this week") that pass the filters.

The order is sorted once and re-sorted at most every `refresh_s` (live events change the
scores in place), so a request walks a prefix of it instead of sorting the catalog; an
attribute filter (its mask is computed anyway) picks the top of the allowed items directly.
A bundle without interactions (all scores 0) still answers, in catalog order: a new user
with no query and no history gets items rather than nothing. Requests with a text query
do not use these sources (see `active`).
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
        self._sorted_scores = np.empty(0, np.float32)
        self._sorted_at = -np.inf

    def active(self, context: SourceContext) -> bool:
        # A text query says what is wanted: popularity then ranks the matches (a feature),
        # it does not add unrelated best-sellers to them.
        return not context.has_query and len(self._scores()) > 0

    def order(self) -> tuple[np.ndarray, np.ndarray]:
        """(labels best first, their scores when sorted), re-sorted every refresh_s."""
        now = time.monotonic()
        if now - self._sorted_at > self.refresh_s:
            scores = self._scores()
            order = np.argsort(-scores, kind="stable")
            positive = order[scores[order] > 0]
            order = positive if len(positive) else order
            self._order, self._sorted_scores = order, scores[order].astype(np.float32)
            self._sorted_at = now
        return self._order, self._sorted_scores

    def find(self, context: SourceContext, quota: int) -> SourceList:
        if context.gate.filter.restricts_attributes:
            return self._top_of_allowed(context, quota)
        order, sorted_scores = self.order()
        kept, start, step, found = [], 0, max(2 * quota, 64), 0
        while start < len(order) and found < quota:
            chunk = np.arange(start, min(start + step, len(order)))
            chunk = chunk[context.gate.keep(order[chunk])]
            kept.append(chunk)
            found += len(chunk)
            start, step = start + step, step * 4
        positions = np.concatenate(kept)[:quota] if kept else np.empty(0, np.int64)
        # the sorted order's scores: live events move an item at the next re-sort
        return SourceList(order[positions], sorted_scores[positions])

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
