"""Retriever: interests -> merged, filtered content candidates with retrieval scores.

The content source (server/retrieval/sources/content.py) runs it; RetrievalConfig also
holds the candidate budget of every source and how it is shared between them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from export.settings import RecserveSettings, settings_config
from server.retrieval.backend import FilteringBackend, RetrievalBackend
from server.retrieval.filters import AttributePostings, ItemFilter, allowed_mask
from server.retrieval.interests import Interest


class RetrievalConfig(RecserveSettings):
    model_config = settings_config("retrieval")

    candidates: int = 300
    """Candidates gathered across all sources before ranking (at least k); each source gets
    its share below; a source with nothing to say (no history: no item-kNN) leaves its share
    unused, so query-only and new-user requests rank fewer, cheaper candidates."""
    content_share: float = 0.34
    """Share of the candidates from content k-NN of the query and history interests."""
    item_knn_share: float = 0.3
    """Share from item-to-item CF neighbours of the history."""
    transitions_share: float = 0.16
    """Share from transitions after the last few history items."""
    popular_share: float = 0.1
    """Share from the most popular items (time-decayed)."""
    trending_share: float = 0.1
    """Share from the trending items (short half-life popularity)."""
    repeat_share: float = 0.17
    """Share from the user's own history items (buy again): 51 of 300, enough for every
    distinct item of a 50-event history, so the ranker decides whether repeats are wanted."""
    cold_bridge_share: float = 0.1
    """Share from items without interactions linked by content to what item-kNN expects
    (sources/cold_bridge.py); empty, and free, when the catalog has no such items."""
    max_interests: int = 4
    """Most interest vectors a user's history is split into."""
    exact_search_max_items: int = 2000
    """When a filter leaves at most this many items, search them exactly instead of HNSW."""
    exact_search_max_share: float = 0.02
    """...or when it leaves at most this share of the catalog."""
    overfetch_rounds: int = 3
    """HNSW post-filter attempts (each fetching twice as many) before falling back to exact."""


@dataclass
class Candidates:
    labels: np.ndarray  # int64 [C]
    scores: np.ndarray  # float32 [C] merged retrieval score


class Retriever:
    def __init__(self, index: RetrievalBackend, postings: AttributePostings, config: RetrievalConfig) -> None:
        self.index = index
        # Milvus evaluates filters itself; the hnsw index is post-filtered here (mask below).
        self.pushdown = isinstance(index, FilteringBackend)
        self.postings = postings
        self.config = config

    def retrieve(self, interests: list[Interest], k: int, item_filter: ItemFilter,
                 total: int | None = None, exact_scores: bool = True) -> Candidates:
        """About `total` (default: the config's candidates) candidates for all interests, at
        least k from each when the filter leaves that many items.

        Scores are `similarity()`; with exact_scores=False they come from the searches
        themselves where the backend returns them (an item found by one interest is not
        scored against the others: cheaper, and enough to order the content source's list).
        """
        total = max(self.config.candidates if total is None else total, k)
        if len(interests) == 1 and not exact_scores and not self.pushdown \
                and not (item_filter.restricts_attributes or item_filter.exclude_labels):
            labels, sims = self._search(interests[0].vector, total, None)  # the common case
            return Candidates(labels, sims)
        needs_mask = item_filter.restricts_attributes or bool(item_filter.exclude_labels)
        mask = allowed_mask(item_filter, self.postings, self.index.present) if needs_mask else None
        # A filter leaving few items is searched exactly on every backend: Milvus's filtered
        # HNSW search, too, can miss most of a handful of allowed items.
        pushdown = self.pushdown and not (mask is not None and self._exact_is_cheaper(mask))
        weights = np.asarray([i.weight for i in interests], dtype=np.float32)
        quotas = np.maximum(k, np.ceil(total * weights / weights.sum())).astype(int)
        scale = 0.5 + 0.5 * weights / weights.max()
        found, sims = [], []
        for interest, quota, factor in zip(interests, quotas, scale):
            if pushdown:
                found.append(self.index.search(interest.vector, int(quota), item_filter))
                sims = None
            else:
                labels, similarity = self._search(interest.vector, int(quota), mask)
                found.append(labels)
                if sims is not None:
                    sims.append(similarity * factor)
        if not found:
            return Candidates(np.empty(0, np.int64), np.empty(0, np.float32))
        if exact_scores or sims is None:
            labels = np.unique(np.concatenate(found))
            return Candidates(labels, self.similarity(labels, interests))
        labels, values = np.concatenate(found), np.concatenate(sims).astype(np.float32)
        if not len(labels):  # nothing allowed (a filter that matches no item): no first-of-run mask
            return Candidates(labels.astype(np.int64), values)
        order = np.lexsort((-values, labels))  # per label, its best similarity first
        first = np.r_[True, labels[order][1:] != labels[order][:-1]]
        return Candidates(labels[order][first], values[order][first])

    def _search(self, query: np.ndarray, k: int, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(labels, similarities) of the k best allowed items."""
        if mask is None:
            labels, sims = self.index.knn(query[None, :], k)
            return labels[0], sims[0]
        allowed = int(mask.sum())
        if allowed == 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        share = allowed / max(1, self.index.size)
        if self._exact_is_cheaper(mask):
            return self.index.exact(query, np.flatnonzero(mask), k)
        fetch = int(np.ceil(k / share * 1.5))
        for _ in range(self.config.overfetch_rounds):
            labels, sims = self.index.knn(query[None, :], fetch, ef=fetch)
            kept = mask[labels[0]]
            if kept.sum() >= k or fetch >= self.index.size:
                return labels[0][kept][:k], sims[0][kept][:k]
            fetch *= 2
        return self.index.exact(query, np.flatnonzero(mask), k)

    def _exact_is_cheaper(self, mask: np.ndarray) -> bool:
        allowed = int(mask.sum())
        return allowed <= self.config.exact_search_max_items \
            or allowed / max(1, self.index.size) <= self.config.exact_search_max_share

    def similarity(self, labels: np.ndarray, interests: list[Interest]) -> np.ndarray:
        """[len(labels)] float32 retrieval score of each label (see `interest_scores`)."""
        if len(labels) == 0 or not interests:
            return np.zeros(len(labels), np.float32)
        return interest_scores(self.index.vectors[labels], interests)


def interest_scores(item_vectors: np.ndarray, interests: list[Interest]) -> np.ndarray:
    """[n] float32: each item's best interest similarity, where a strong match to a minor
    interest still counts, slightly discounted (not averaged away)."""
    if len(item_vectors) == 0 or not interests:
        return np.zeros(len(item_vectors), np.float32)
    weights = np.asarray([i.weight for i in interests], dtype=np.float32)
    centers = np.stack([i.vector for i in interests])
    scale = 0.5 + 0.5 * weights / weights.max()
    return (item_vectors @ centers.T * scale).max(axis=1).astype(np.float32)
