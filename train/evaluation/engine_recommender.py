"""The server's own RecommendationEngine as an evaluation recommender.

Each case is a RecommendQuery carrying the user's training history as `history` (item ids),
answered by `RecommendationEngine.recommend` - the same retrieval (history interests ->
HNSW) and ranking (interaction features @ weights) the gRPC service runs. Without a query
text the batcher is never called, so no encoder session is needed per case.
"""

from __future__ import annotations

import asyncio
from typing import Iterable, Sequence

import numpy as np

from server.engine import RecommendationEngine
from server.metrics import ServerMetrics
from server.ranking.features import FEATURE_NAMES
from server.ranking.scorer import weight_vector
from server.requests import RecommendQuery
from server.served_bundle import ServedBundle

# "Without the reranker": the score is the retrieval similarity alone.
RETRIEVAL_ONLY = {name: (1.0 if name == "retrieval" else 0.0) for name in FEATURE_NAMES}


def make_engine(bundle: ServedBundle, weights: dict[str, float] | None = None) -> RecommendationEngine:
    """An engine over the bundle; `weights` replace the bundle's ranker weights when given."""
    engine = RecommendationEngine(bundle, batcher=None, metrics=ServerMetrics())  # type: ignore[arg-type]
    if weights is not None:
        engine.weights = weight_vector(weights)
    return engine


class EngineRecommender:
    def __init__(self, name: str, engine: RecommendationEngine) -> None:
        self.name = name
        self.engine = engine
        catalog = engine.bundle.catalog
        self.item_ids = catalog.item_ids
        self.label_of = catalog.label_of
        self.max_history = engine.bundle.users.history_length

    def query(self, history: np.ndarray, k: int) -> RecommendQuery:
        recent = history[-self.max_history:]
        return RecommendQuery(history=tuple(self.item_ids[int(i)] for i in recent), k=k)

    def recommend(self, history: np.ndarray, k: int) -> np.ndarray:
        return self.recommend_many([history], k)[0]

    def recommend_many(self, histories: Sequence[np.ndarray], k: int) -> list[np.ndarray]:
        return asyncio.run(self._answer(histories, k))

    async def _answer(self, histories: Iterable[np.ndarray], k: int) -> list[np.ndarray]:
        out = []
        for history in histories:
            result = await self.engine.recommend(self.query(history, k))
            out.append(np.asarray([self.label_of[item.item_id] for item in result.items],
                                  dtype=np.int64))
        return out
