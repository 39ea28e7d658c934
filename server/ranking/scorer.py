"""Linear scoring of candidate features, MMR diversity, and explanations people can trust."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from server.ranking.features import COLUMN, FEATURE_NAMES

# Defaults until a bundle carries learned weights (`recserve train-ranker`, manifest "ranker").
# Similarity terms carry the ranking; co-occurrence is the strongest behavioural signal;
# repeats and items like disliked ones are pushed down.
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
}


def weight_vector(weights: dict[str, float] | None) -> np.ndarray:
    merged = {**DEFAULT_WEIGHTS, **(weights or {})}
    unknown = set(merged) - set(FEATURE_NAMES)
    if unknown:
        raise ValueError(f"unknown ranking features in weights: {sorted(unknown)}")
    return np.asarray([merged[name] for name in FEATURE_NAMES], dtype=np.float32)


def select(scores: np.ndarray, vectors: np.ndarray, k: int, diversity: float) -> np.ndarray:
    """Positions of the k items to return: top scores, or MMR when diversity > 0."""
    k = min(k, len(scores))
    if k == 0:
        return np.empty(0, np.int64)
    if diversity <= 0 or k == 1:
        top = np.argpartition(-scores, k - 1)[:k] if len(scores) > k else np.arange(len(scores))
        return top[np.argsort(-scores[top], kind="stable")]
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


def contributions(row: np.ndarray, weights: np.ndarray, top: int = 3) -> list[Contribution]:
    """The features that moved this item's score most (by absolute contribution)."""
    parts = row * weights
    order = np.argsort(-np.abs(parts))[:top]
    return [Contribution(FEATURE_NAMES[i], float(row[i]), float(weights[i]), float(parts[i]))
            for i in order if parts[i] != 0]


def reason(
    row: np.ndarray,
    weights: np.ndarray,
    *,
    query: str,
    history_titles: list[str],
    best_history_by_similarity: int | None,
    best_history_by_cooccurrence: int | None,
) -> str:
    """One human sentence for the strongest specific signal (behaviour or content).

    The generic retrieval score is the fallback, not the reason: "often bought with X" or
    "similar to Y" tells a person why, "close to your interests" barely does.
    """
    parts = row * weights
    ranked = [FEATURE_NAMES[i] for i in np.argsort(-parts) if parts[i] > 0]
    ranked = [f for f in ranked if f != "retrieval"] + (["retrieval"] if "retrieval" in ranked else [])
    for feature in ranked:
        if feature == "co_occurrence" and best_history_by_cooccurrence is not None:
            return f"often bought with {history_titles[best_history_by_cooccurrence]}"
        if feature in ("history_max_similarity", "history_mean_similarity") \
                and best_history_by_similarity is not None:
            return f"similar to {history_titles[best_history_by_similarity]}"
        if feature in ("query_similarity", "retrieval") and query:
            return f"matches \u201c{query}\u201d"
        if feature == "retrieval" and history_titles:
            return "close to your recent interests"
        if feature == "popularity":
            return "popular right now"
        if feature == "freshness":
            return "new arrival"
        if feature == "attribute_affinity":
            return "matches the kind of items you choose"
    return "popular right now" if row[COLUMN["popularity"]] > 0 else "recommended for you"
