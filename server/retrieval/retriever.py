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
    its share below, an inactive source's share (no history: no item-kNN) goes to the rest."""
    content_share: float = 0.4
    """Share of the candidates from content k-NN of the query and history interests."""
    item_knn_share: float = 0.25
    """Share from item-to-item CF neighbours of the history."""
    transitions_share: float = 0.15
    """Share from transitions after the last few history items."""
    popular_share: float = 0.1
    """Share from the most popular items (time-decayed)."""
    trending_share: float = 0.1
    """Share from the trending items (short half-life popularity)."""
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
                 total: int | None = None) -> Candidates:
        """About `total` (default: the config's candidates) candidates for all interests, at
        least k from each when the filter leaves that many items."""
        total = max(self.config.candidates if total is None else total, k)
        needs_mask = not self.pushdown and (item_filter.restricts_attributes or bool(item_filter.exclude_labels))
        mask = allowed_mask(item_filter, self.postings, self.index.present) if needs_mask else None
        weights = np.asarray([i.weight for i in interests], dtype=np.float32)
        quotas = np.maximum(k, np.ceil(total * weights / weights.sum())).astype(int)
        found: list[np.ndarray] = []
        for interest, quota in zip(interests, quotas):
            if self.pushdown:
                found.append(self.index.search(interest.vector, int(quota), item_filter))
            else:
                found.append(self._search(interest.vector, int(quota), mask))
        labels = np.unique(np.concatenate(found)) if found else np.empty(0, np.int64)
        return Candidates(labels, self.similarity(labels, interests))

    def _search(self, query: np.ndarray, k: int, mask: np.ndarray | None) -> np.ndarray:
        if mask is None:
            labels, _ = self.index.knn(query[None, :], k)
            return labels[0]
        allowed = int(mask.sum())
        if allowed == 0:
            return np.empty(0, np.int64)
        share = allowed / max(1, self.index.size)
        if allowed <= self.config.exact_search_max_items or share <= self.config.exact_search_max_share:
            return self.index.exact(query, np.flatnonzero(mask), k)[0]
        fetch = int(np.ceil(k / share * 1.5))
        for _ in range(self.config.overfetch_rounds):
            labels, _ = self.index.knn(query[None, :], fetch, ef=fetch)
            kept = labels[0][mask[labels[0]]]
            if len(kept) >= k or fetch >= self.index.size:
                return kept[:k]
            fetch *= 2
        return self.index.exact(query, np.flatnonzero(mask), k)[0]

    def similarity(self, labels: np.ndarray, interests: list[Interest],
                   vectors: np.ndarray | None = None) -> np.ndarray:
        """[len(labels)] float32 retrieval score: best interest similarity, where a strong
        match to a minor interest still counts, slightly discounted (not averaged away)."""
        if len(labels) == 0 or not interests:
            return np.zeros(len(labels), np.float32)
        vectors = self.index.vectors if vectors is None else vectors
        weights = np.asarray([i.weight for i in interests], dtype=np.float32)
        centers = np.stack([i.vector for i in interests])
        sims = vectors[labels] @ centers.T
        scale = 0.5 + 0.5 * weights / weights.max()
        return (sims * scale).max(axis=1).astype(np.float32)
