"""Full-ranking metrics of one relevant item per case: Recall@k and NDCG@k, per group.

Each evaluation case has one held-out target; a recommender returns a ranked list of item
labels (its top max(k), all items considered - no sampled negatives). A case scores
Recall@k = 1 when the target is in the first k, and NDCG@k = 1 / log2(rank + 2) for a
0-based rank below k (the ideal DCG of one relevant item is 1).
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np


def target_positions(ranked: Sequence[Sequence[int]], targets: Sequence[int]) -> np.ndarray:
    """0-based position of each case's target in its ranked list; -1 when absent."""
    out = np.full(len(targets), -1, dtype=np.int64)
    for i, (items, target) in enumerate(zip(ranked, targets)):
        hits = np.flatnonzero(np.asarray(items) == target)
        if len(hits):
            out[i] = int(hits[0])
    return out


def recall_at(positions: np.ndarray, k: int) -> float:
    if len(positions) == 0:
        return float("nan")
    return float(((positions >= 0) & (positions < k)).mean())


def ndcg_at(positions: np.ndarray, k: int) -> float:
    if len(positions) == 0:
        return float("nan")
    hit = (positions >= 0) & (positions < k)
    gains = np.where(hit, 1.0 / np.log2(np.maximum(positions, 0) + 2.0), 0.0)
    return float(gains.mean())


def summarise(positions: np.ndarray, recall_ks: Iterable[int] = (10, 50),
              ndcg_ks: Iterable[int] = (10,)) -> dict[str, float]:
    """{'cases': n, 'recall@10': ..., 'recall@50': ..., 'ndcg@10': ...}."""
    out: dict[str, float] = {"cases": int(len(positions))}
    out.update({f"recall@{k}": recall_at(positions, k) for k in recall_ks})
    out.update({f"ndcg@{k}": ndcg_at(positions, k) for k in ndcg_ks})
    return out


def summarise_groups(positions: np.ndarray, groups: Mapping[str, np.ndarray],
                     recall_ks: Iterable[int] = (10, 50),
                     ndcg_ks: Iterable[int] = (10,)) -> dict[str, dict[str, float]]:
    """'all' plus one summary per named boolean mask over the cases."""
    recall_ks, ndcg_ks = tuple(recall_ks), tuple(ndcg_ks)
    out = {"all": summarise(positions, recall_ks, ndcg_ks)}
    for name, mask in groups.items():
        out[name] = summarise(positions[np.asarray(mask, dtype=bool)], recall_ks, ndcg_ks)
    return out
