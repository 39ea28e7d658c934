"""Multi-interest user representation: a history split into a few weighted interest vectors.

A user who bought candles and garden tools should get both, not the average of the two.
History items are clustered greedily (most recent first) by cosine similarity, refined by
one k-means step, and each cluster is weighted by the recency of its members.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Interest:
    vector: np.ndarray  # L2-normalised
    weight: float
    source: str  # "query" or "history"


def _normalise(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(norm, 1e-12)


def recency_weights(n: int, half_life_events: float) -> np.ndarray:
    """Weights for n events ordered oldest..newest; the newest weighs 1, halving every half-life."""
    age = np.arange(n - 1, -1, -1, dtype=np.float32)
    return np.power(0.5, age / max(half_life_events, 1e-6)).astype(np.float32)


def history_interests(
    vectors: np.ndarray,
    *,
    max_interests: int = 4,
    similarity_threshold: float = 0.5,
    half_life_events: float = 10.0,
) -> list[Interest]:
    """Cluster history vectors (oldest..newest) into at most max_interests weighted interests."""
    if len(vectors) == 0:
        return []
    weights = recency_weights(len(vectors), half_life_events)
    centroids: list[np.ndarray] = []
    for v in vectors[::-1]:  # newest first, so recent interests seed the clusters
        if centroids:
            sims = np.asarray(centroids) @ v
            if sims.max() >= similarity_threshold or len(centroids) >= max_interests:
                continue
        centroids.append(v)
    centers = np.asarray(centroids)
    assignment = np.argmax(vectors @ centers.T, axis=1)  # one k-means refinement step
    interests = []
    for c in range(len(centers)):
        members = assignment == c
        if not members.any():
            continue
        center = _normalise((vectors[members] * weights[members, None]).sum(axis=0))
        interests.append(Interest(center, float(weights[members].sum()), "history"))
    total = sum(i.weight for i in interests)
    for interest in interests:
        interest.weight /= total
    return sorted(interests, key=lambda i: -i.weight)


def mapped(interests: list[Interest], matrix: np.ndarray | None) -> list[Interest]:
    """Each interest as normalize(vector @ matrix): the bundle's learned map toward the items
    bought next (train/history_adapter.py); as they are without one."""
    if matrix is None or not interests:
        return interests
    vectors = _normalise(np.asarray([i.vector for i in interests]) @ matrix)
    return [Interest(v, i.weight, i.source) for v, i in zip(vectors, interests)]
