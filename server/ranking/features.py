"""Per-candidate interaction features, computed for all candidates at once (numpy, no loops).

Feature columns (FEATURE_NAMES) and what they mean:
- retrieval: merged similarity to the request's interests (query and history clusters)
- query_similarity: cosine to the query text (0 without a query)
- history_max_similarity / history_mean_similarity: to the recent history items (recency-weighted mean)
- co_occurrence: recency-weighted co-occurrence with the recent history items (0..1)
- popularity: time-decayed popularity (0..1, the bundle's feature table plus live counts)
- freshness: exp decay of the item's age since created_at
- attribute_affinity: share of the user's attribute histogram the item's attributes match
- already_interacted: 1 when the item is in the user's history (a penalty by default)
- disliked_similarity: max cosine to items the user disliked or marked not interested
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

FEATURE_NAMES = (
    "retrieval",
    "query_similarity",
    "history_max_similarity",
    "history_mean_similarity",
    "co_occurrence",
    "popularity",
    "freshness",
    "attribute_affinity",
    "already_interacted",
    "disliked_similarity",
)
COLUMN = {name: i for i, name in enumerate(FEATURE_NAMES)}


@dataclass
class RankingContext:
    """Everything about the request the features need (labels are index labels)."""

    query_vector: np.ndarray | None
    history_labels: np.ndarray  # oldest..newest
    history_weights: np.ndarray  # recency weights aligned with history_labels, sum 1
    disliked_labels: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    now: float = 0.0  # epoch seconds


@dataclass
class FeatureTables:
    """The item-side tables features read (from the bundle, updated by live writes)."""

    popularity: np.ndarray  # [n] 0..1
    cooccurrence: sp.csr_matrix  # [n, n]
    created_at: np.ndarray  # [n] epoch seconds, nan unknown
    attribute_codes: dict[str, np.ndarray]  # attribute -> [n] int32 value code (-1 none)
    freshness_half_life_days: float = 30.0


def compute_features(
    candidates: np.ndarray,
    retrieval: np.ndarray,
    ctx: RankingContext,
    tables: FeatureTables,
    vectors: np.ndarray,
) -> tuple[np.ndarray, np.ndarray | None]:
    """[C, len(FEATURE_NAMES)] float32, and the [C, H] history similarity matrix (or None)."""
    n = len(candidates)
    out = np.zeros((n, len(FEATURE_NAMES)), dtype=np.float32)
    out[:, COLUMN["retrieval"]] = retrieval
    cand_vectors = vectors[candidates]
    if ctx.query_vector is not None:
        out[:, COLUMN["query_similarity"]] = cand_vectors @ ctx.query_vector
    history_sims = None
    if len(ctx.history_labels):
        history_sims = cand_vectors @ vectors[ctx.history_labels].T  # [C, H]
        out[:, COLUMN["history_max_similarity"]] = history_sims.max(axis=1)
        out[:, COLUMN["history_mean_similarity"]] = history_sims @ ctx.history_weights
        rows = tables.cooccurrence[ctx.history_labels]  # [H, n] sparse
        cooc = np.asarray(rows[:, candidates].T @ ctx.history_weights).ravel()  # [C]
        out[:, COLUMN["co_occurrence"]] = np.minimum(cooc, 1.0)
        out[:, COLUMN["already_interacted"]] = np.isin(candidates, ctx.history_labels)
        out[:, COLUMN["attribute_affinity"]] = _attribute_affinity(candidates, ctx, tables)
    out[:, COLUMN["popularity"]] = tables.popularity[candidates]
    age_days = (ctx.now - tables.created_at[candidates]) / 86400.0
    freshness = np.exp(-np.log(2) * np.maximum(age_days, 0) / tables.freshness_half_life_days)
    out[:, COLUMN["freshness"]] = np.nan_to_num(freshness, nan=0.0)
    if len(ctx.disliked_labels):
        disliked = cand_vectors @ vectors[ctx.disliked_labels].T
        out[:, COLUMN["disliked_similarity"]] = np.maximum(disliked.max(axis=1), 0)
    return out, history_sims


def _attribute_affinity(candidates: np.ndarray, ctx: RankingContext, tables: FeatureTables) -> np.ndarray:
    """Mean over attributes of the history's (recency-weighted) share of the item's value."""
    if not tables.attribute_codes:
        return np.zeros(len(candidates), np.float32)
    total = np.zeros(len(candidates), np.float32)
    for codes in tables.attribute_codes.values():
        hist_codes = codes[ctx.history_labels]
        known = hist_codes >= 0
        if not known.any():
            continue
        histogram = np.bincount(hist_codes[known], weights=ctx.history_weights[known],
                                minlength=int(codes.max()) + 1)
        histogram /= max(histogram.sum(), 1e-12)
        cand_codes = codes[candidates]
        total += np.where(cand_codes >= 0, histogram[np.maximum(cand_codes, 0)], 0.0)
    return total / len(tables.attribute_codes)
