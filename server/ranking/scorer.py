"""Linear scoring of candidate features (the fallback ranker), MMR diversity, explanations.

A ranker is anything with `score(features [C, len(FEATURES)]) -> [C]`. `LinearScorer` is
the fallback for bundles without a learned model; its weights come from the manifest's
ranker section (`recserve train-ranker`) merged over DEFAULT_WEIGHTS. Explanations always
use linear contributions, so they stay readable whichever ranker orders the items.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from server.ranking.features import COLUMN, FEATURES, USER_FEATURES

# Defaults until a bundle carries learned weights. Similarity carries the ranking; the
# behavioural signals (item-kNN, transitions, co-occurrence) are the strongest evidence;
# being found by several sources, or high in one, counts a little; repeats and items like
# disliked ones are pushed down unless the item is one people buy again.
DEFAULT_WEIGHTS: dict[str, float] = {
    "retrieval": 1.0,
    "query_similarity": 0.5,
    "history_max_similarity": 0.3,
    "history_mean_similarity": 0.1,
    "co_occurrence": 0.8,
    "popularity": 0.2,
    "freshness": 0.05,
    "attribute_affinity": 0.1,
    "already_interacted": -0.3,
    "disliked_similarity": -1.0,
    "item_knn": 0.8,
    "transition": 0.6,
    "trending": 0.1,
    "repeat_purchase": 0.3,
    "rank_content": 0.1,
    "rank_item_knn": 0.1,
    "rank_transitions": 0.1,
    "rank_popular": 0.05,
    "rank_trending": 0.05,
    "source_count": 0.05,
    # version 3: per-user repeat evidence; no default opinion (a learned ranker decides)
    "history_count": 0.0,
    "history_recency": 0.0,
    "user_repeat_share": 0.0,
    "history_size": 0.0,
    "rank_repeat": 0.0,
    # version 4
    "neighbour_likeness": 0.0,
    # version 5
    "bridge_likeness": 0.0,
}


def weight_vector(weights: dict[str, float] | None) -> np.ndarray:
    merged = {**DEFAULT_WEIGHTS, **(weights or {})}
    unknown = set(merged) - set(FEATURES)
    if unknown:
        raise ValueError(f"unknown ranking features in weights: {sorted(unknown)}")
    return np.asarray([merged[name] for name in FEATURES], dtype=np.float32)


class Ranker(Protocol):
    def score(self, features: np.ndarray) -> np.ndarray:
        """[C] scores for [C, len(FEATURES)] feature rows (higher = better)."""


class LinearScorer:
    """features @ weights: the fallback ranker, and the weights explanations are read with."""

    def __init__(self, weights: dict[str, float] | np.ndarray | None = None) -> None:
        self.weights = weights if isinstance(weights, np.ndarray) else weight_vector(weights)

    def score(self, features: np.ndarray) -> np.ndarray:
        return features @ self.weights


def select(scores: np.ndarray, vectors: np.ndarray, k: int, diversity: float) -> np.ndarray:
    """Positions of the k items to return: top scores, or MMR when diversity > 0."""
    k = min(k, len(scores))
    if k == 0:
        return np.empty(0, np.int64)
    if diversity <= 0 or k == 1:
        top = np.argpartition(-scores, k - 1)[:k] if len(scores) > k else np.arange(len(scores))
        return top[np.lexsort((top, -scores[top]))]
    span = scores.max() - scores.min()
    relevance = (scores - scores.min()) / span if span > 0 else np.ones_like(scores)
    chosen = [int(np.argmax(relevance))]
    max_sim = vectors @ vectors[chosen[0]]
    available = np.ones(len(scores), dtype=bool)
    available[chosen[0]] = False
    for _ in range(k - 1):
        mmr = (1 - diversity) * relevance - diversity * max_sim
        mmr[~available] = -np.inf
        best = int(np.argmax(mmr))
        chosen.append(best)
        available[best] = False
        max_sim = np.maximum(max_sim, vectors @ vectors[best])
    return np.asarray(chosen, dtype=np.int64)


@dataclass
class Contribution:
    feature: str
    value: float
    weight: float
    contribution: float


_PER_ITEM = np.asarray([name not in USER_FEATURES for name in FEATURES])


def contributions(row: np.ndarray, weights: np.ndarray, top: int = 3) -> list[Contribution]:
    """The item's features that moved its score most (by absolute contribution); features
    of the user (the same for every item of the request) are left out."""
    parts = np.where(_PER_ITEM, row * weights, 0.0)
    order = np.argsort(-np.abs(parts))[:top]
    return [Contribution(FEATURES[i], float(row[i]), float(weights[i]), float(parts[i]))
            for i in order if parts[i] != 0]


@dataclass
class Evidence:
    """The history items behind each behavioural or content signal (titles, None = none)."""

    also_bought: str | None = None  # item-kNN: the history item whose neighbours hold this one
    bought_after: str | None = None  # transitions: the recent item this one follows
    bought_with: str | None = None  # co-occurrence
    similar_to: str | None = None  # content similarity


# feature -> (the source it speaks for, how a person reads it); {x} is a history title.
_PHRASES: dict[str, tuple[str, str]] = {
    "item_knn": ("also_bought", "customers who bought {x} also bought this"),
    "rank_item_knn": ("also_bought", "customers who bought {x} also bought this"),
    "transition": ("bought_after", "often bought after {x}"),
    "rank_transitions": ("bought_after", "often bought after {x}"),
    "co_occurrence": ("bought_with", "often bought with {x}"),
    "history_max_similarity": ("similar_to", "similar to {x}"),
    "history_mean_similarity": ("similar_to", "similar to {x}"),
}
_PLAIN = {
    "trending": "popular this week",
    "rank_trending": "popular this week",
    "popularity": "popular right now",
    "rank_popular": "popular right now",
    "freshness": "new arrival",
    "attribute_affinity": "matches the kind of items you choose",
    "repeat_purchase": "you buy this again",
    "history_count": "you buy this again",
    "history_recency": "you bought this recently",
    "neighbour_likeness": "like items bought by customers who bought yours",
    "bridge_likeness": "like items bought by customers who bought yours",
}


def _source_phrase(source: str, row: np.ndarray, query: str, evidence: Evidence) -> str | None:
    """How a person reads "this source found it" (None: no evidence to name)."""
    if source == "item_knn" and evidence.also_bought is not None:
        return f"customers who bought {evidence.also_bought} also bought this"
    if source == "transitions" and evidence.bought_after is not None:
        return f"often bought after {evidence.bought_after}"
    if source == "repeat":
        return "you bought this before"
    if source == "cold_bridge":
        return "new, like items bought by customers who bought yours"
    if source == "trending":
        return "popular this week"
    if source == "popular":
        return "popular right now"
    if source == "content":
        by_query = row[COLUMN["query_similarity"]] >= row[COLUMN["history_max_similarity"]]
        if query and (by_query or evidence.similar_to is None):
            return f"matches your search \u201c{query}\u201d"
        if evidence.similar_to is not None:
            return f"similar to {evidence.similar_to}"
    return None


def reason(row: np.ndarray, weights: np.ndarray, *, query: str, evidence: Evidence,
           sources: list[str] | None = None) -> str:
    """One human sentence naming why this item is here.

    `sources` (best rank first) found the item: the first one with evidence names it, the
    user's own evidence (history, query) before popularity
    ("customers who bought X also bought this", "often bought after X", "similar to X",
    "popular this week", "matches your search"). Without sources, the strongest specific
    signal speaks; the generic content score is the fallback, not the reason.
    """
    # personal evidence (this user's history or query) speaks before "popular"
    ordered = sorted(sources or (), key=lambda name: name in ("popular", "trending"))
    for source in ordered:
        text = _source_phrase(source, row, query, evidence)
        if text is not None:
            return text
    parts = row * weights
    ranked = [FEATURES[i] for i in np.argsort(-parts, kind="stable") if parts[i] > 0]
    generic = ("retrieval", "rank_content", "source_count")
    ranked = [f for f in ranked if f not in generic] + [f for f in ranked if f in generic]
    for feature in ranked:
        if feature in _PHRASES:
            kind, template = _PHRASES[feature]
            title = getattr(evidence, kind)
            if title is not None:
                return template.format(x=title)
        elif feature in _PLAIN:
            return _PLAIN[feature]
        elif feature in ("query_similarity", "retrieval", "rank_content") and query:
            return f"matches your search \u201c{query}\u201d"
        elif feature in ("retrieval", "rank_content") and evidence.similar_to is not None:
            return f"similar to {evidence.similar_to}"
    if row[COLUMN["trending"]] > 0:
        return "popular this week"
    return "popular right now" if row[COLUMN["popularity"]] > 0 else "recommended for you"
