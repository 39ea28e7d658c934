"""The engine's own candidates for a history, with their feature rows.

RecommendationEngine._rank computes these and keeps only the scored top k; the ranker needs
every candidate's row, so this runs the same steps with the same engine objects (history
resolution, interest clustering, retriever, compute_features) and stops before scoring.
tests/train/test_ranker.py checks that scoring these rows with the engine's weights gives
exactly the engine's answer, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from server.engine import RecommendationEngine
from server.ranking.features import RankingContext, compute_features
from server.requests import RecommendQuery
from server.retrieval.interests import history_interests, recency_weights


@dataclass
class CandidateRows:
    labels: np.ndarray    # int64 [C] candidate item labels
    features: np.ndarray  # float32 [C, len(FEATURE_NAMES)]


def candidate_rows(engine: RecommendationEngine, history: np.ndarray, k: int) -> CandidateRows:
    """Retrieval candidates of a history-only request and their interaction features."""
    ids = engine.bundle.catalog.item_ids
    recent = history[-engine.bundle.users.history_length:]
    request = RecommendQuery(history=tuple(ids[int(i)] for i in recent), k=k)
    labels, disliked = engine._history(request)
    vectors = engine.bundle.index.vectors
    interests = list(history_interests(
        vectors[labels], max_interests=engine.retrieval_config.max_interests,
        similarity_threshold=engine.ranking.interest_similarity,
        half_life_events=engine.ranking.history_half_life_events))
    if not interests:
        return CandidateRows(np.empty(0, np.int64), np.empty((0, engine.weights.shape[0]), np.float32))
    found = engine.retriever.retrieve(interests, k, engine._filter(request, labels, disliked))
    weights = recency_weights(len(labels), engine.ranking.history_half_life_events)
    ctx = RankingContext(query_vector=None, history_labels=labels,
                         history_weights=weights / weights.sum() if len(weights) else weights,
                         disliked_labels=disliked, now=time.time())
    features, _ = compute_features(found.labels, found.scores, ctx, engine.bundle.tables, vectors)
    return CandidateRows(found.labels, features)
