"""The server's own RecommendationEngine as an evaluation recommender.

Each case is a RecommendQuery carrying the user's training history as `history` (item ids),
answered by `RecommendationEngine.recommend_many` - the same retrieval (history interests
-> HNSW) and ranking (interaction features @ weights) the gRPC service runs.

With `query_items` > 0 the request also carries a query text: the item texts of the newest
distinct history items, joined as train/pairs.py joins them for fine-tuning (the query
side the fine-tuned encoder learned). That text goes through the server's real
TokenBudgetBatcher and ONNX session. Item texts are rebuilt from the bundle's catalog with
the bundle's template (title and attributes; catalogs with a free-text field would need
that field too).
"""

from __future__ import annotations

import asyncio
from typing import Iterable, Sequence

import numpy as np

from export.item_text import item_text
from server.batching.batcher import BatcherConfig, TokenBudgetBatcher
from server.engine import RecommendationEngine
from server.metrics import ServerMetrics
from server.ranking.features import FEATURE_NAMES
from server.ranking.scorer import weight_vector
from server.requests import RecommendQuery
from server.served_bundle import ServedBundle
from train.pairs import QUERY_SEPARATOR

# "Without the reranker": the score is the retrieval similarity alone.
RETRIEVAL_ONLY = {name: (1.0 if name == "retrieval" else 0.0) for name in FEATURE_NAMES}


def make_engine(bundle: ServedBundle, weights: dict[str, float] | None = None,
                with_batcher: bool = False, linear_only: bool = False) -> RecommendationEngine:
    """An engine over the bundle, ranking as the server would (its learned ranker when the
    bundle has one); `weights` replace the linear weights and rank with them alone, as does
    `linear_only` with the bundle's own linear weights.

    Without a batcher the engine answers history-only requests (no text to embed).
    """
    metrics = ServerMetrics()
    batcher = TokenBudgetBatcher(bundle.backend, BatcherConfig(), metrics) if with_batcher else None
    engine = RecommendationEngine(bundle, batcher=batcher, metrics=metrics)  # type: ignore[arg-type]
    if weights is not None:
        engine.weights = weight_vector(weights)
    if weights is not None or linear_only:
        engine.ranker = engine.linear
    return engine


def bundle_item_texts(bundle: ServedBundle) -> list[str]:
    """Item texts by the bundle's template (see module docstring)."""
    include = (bundle.manifest.get("item_text") or {}).get("attributes")
    catalog = bundle.catalog
    return [item_text(title, "", attrs, include=include)
            for title, attrs in zip(catalog.titles, catalog.attributes)]


def history_query_text(history: np.ndarray, texts: Sequence[str], items: int) -> str:
    """Texts of the newest `items` distinct history items, newest first (as in training)."""
    newest: dict[int, None] = {}
    for label in history[::-1].tolist():
        newest.setdefault(label, None)
        if len(newest) == items:
            break
    return QUERY_SEPARATOR.join(texts[label] for label in newest)


class EngineRecommender:
    def __init__(self, name: str, engine: RecommendationEngine, query_items: int = 0) -> None:
        self.name = name
        self.engine = engine
        catalog = engine.bundle.catalog
        self.item_ids = catalog.item_ids
        self.label_of = catalog.label_of
        self.max_history = engine.bundle.users.history_length
        self.query_items = query_items
        self.texts = bundle_item_texts(engine.bundle) if query_items else None
        if query_items and engine.batcher is None:
            raise ValueError("a history query text needs an engine with a batcher")
        self._loop: asyncio.AbstractEventLoop | None = None  # one loop: the batcher lives on it

    def query(self, history: np.ndarray, k: int) -> RecommendQuery:
        recent = history[-self.max_history:]
        text = history_query_text(history, self.texts, self.query_items) if self.texts else ""
        return RecommendQuery(query=text, history=tuple(self.item_ids[int(i)] for i in recent), k=k)

    def recommend(self, history: np.ndarray, k: int) -> np.ndarray:
        return self.recommend_many([history], k)[0]

    def recommend_many(self, histories: Sequence[np.ndarray], k: int) -> list[np.ndarray]:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            if self.engine.batcher is not None:
                self._loop.run_until_complete(self.engine.batcher.start())
        return self._loop.run_until_complete(self._answer(histories, k))

    def close(self) -> None:
        if self._loop is not None:
            if self.engine.batcher is not None:
                self._loop.run_until_complete(self.engine.batcher.stop())
            self._loop.close()
            self._loop = None

    async def _answer(self, histories: Iterable[np.ndarray], k: int) -> list[np.ndarray]:
        # One batcher call for all query texts of the chunk, as RecommendBatch does.
        results = await self.engine.recommend_many([self.query(h, k) for h in histories])
        return [np.asarray([self.label_of[item.item_id] for item in result.items], dtype=np.int64)
                for result in results]
