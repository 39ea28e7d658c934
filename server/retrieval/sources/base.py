"""What every candidate source shares: the request context, the item gate, the result list.

A source is any object with a `name` (one of SOURCE_NAMES) and
`find(context, quota) -> SourceList`: at most `quota` labels, best first, each allowed by
`context.gate` (filters, exclusions and dislikes apply to every source alike).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from server.retrieval.filters import AttributePostings, ItemFilter, allowed_mask
from server.retrieval.interests import Interest

# Column order of provenance (ranks) and of the rank_<source> features: append only.
SOURCE_NAMES: tuple[str, ...] = ("content", "item_knn", "transitions", "popular", "trending", "repeat",
                                 "cold_bridge")


class ItemGate:
    """Which labels a request may return: present (not deleted), matching the attribute
    filter, not excluded (request exclusions, dislikes, and the history when asked)."""

    def __init__(self, item_filter: ItemFilter, postings: AttributePostings, present: np.ndarray) -> None:
        self.filter = item_filter
        self._postings = postings
        self._present = present
        excluded = item_filter.exclude_labels
        self._excluded = np.unique(np.asarray(excluded, dtype=np.int64)) if excluded else None
        self._mask: np.ndarray | None = None

    def mask(self) -> np.ndarray:
        """Bool mask over all labels (computed once per request, only when asked)."""
        if self._mask is None:
            self._mask = allowed_mask(self.filter, self._postings, self._present)
        return self._mask

    def keep(self, labels: np.ndarray) -> np.ndarray:
        """Bool [len(labels)]: which of these labels pass."""
        if self.filter.restricts_attributes:
            mask = self.mask()
        else:
            mask = self._present
        ok = labels < len(mask)
        ok[ok] = mask[labels[ok]]
        if self._excluded is not None:
            ok &= ~np.isin(labels, self._excluded)
        return ok


@dataclass
class SourceContext:
    """The request as sources see it (labels are index labels)."""

    history: np.ndarray  # int64, oldest..newest
    history_weights: np.ndarray  # float32 recency weights aligned with history, sum 1
    recent_weights: np.ndarray  # float32 transition weights of the newest history items
    interests: list[Interest]  # content interests (query first when there is one)
    gate: ItemGate
    k: int
    # source name -> (sorted labels, summed scores) a collaborative source aggregated, kept
    # so the ranking features read them instead of aggregating the same rows again
    neighbour_scores: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    # (labels, weights) of the item-kNN expectation head the cold bridge took (features reuse it)
    expectation_head: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def has_query(self) -> bool:
        return any(interest.source == "query" for interest in self.interests)


@dataclass
class SourceList:
    labels: np.ndarray  # int64 [m], best first
    scores: np.ndarray  # float32 [m]

    @classmethod
    def empty(cls) -> "SourceList":
        return cls(np.empty(0, np.int64), np.empty(0, np.float32))

    def __len__(self) -> int:
        return len(self.labels)


class CandidateSource(Protocol):
    name: str

    def active(self, context: SourceContext) -> bool:
        """Whether this source has anything to say for this request (gets a quota)."""

    def find(self, context: SourceContext, quota: int) -> SourceList: ...


def best_allowed(labels: np.ndarray, scores: np.ndarray, gate: ItemGate, quota: int) -> SourceList:
    """The `quota` best-scoring allowed labels (labels unique), best first, ties by label."""
    keep = gate.keep(labels) & (scores > 0)
    labels, scores = labels[keep], scores[keep]
    if len(labels) > quota:
        top = np.argpartition(-scores, quota - 1)[:quota]
        labels, scores = labels[top], scores[top]
    order = np.lexsort((labels, -scores))
    return SourceList(labels[order].astype(np.int64), scores[order].astype(np.float32))
