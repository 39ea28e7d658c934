"""RecommendationEngine: request -> interests -> candidates -> features -> ranked, explained items.

Plain asyncio Python (no gRPC): the service layer converts protobufs to RecommendQuery and
back. Only the query text goes through the batcher; retrieval and ranking are a few numpy
calls on the event loop.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from export.settings import RecserveSettings, settings_config
from server.batching.batcher import EmbedTiming, TokenBudgetBatcher
from server.metrics import ServerMetrics
from server.ranking.features import COLUMN, RankingContext, compute_features
from server.ranking.scorer import contributions, reason, select, weight_vector
from server.requests import RecommendQuery, RecommendResult, ScoredResult, StageTimings
from server.retrieval.filters import ItemFilter
from server.retrieval.interests import Interest, history_interests, recency_weights
from server.retrieval.retriever import RetrievalConfig, Retriever
from server.served_bundle import ServedBundle


class RankingConfig(RecserveSettings):
    model_config = settings_config("ranking")

    query_weight: float = 1.0
    """Weight of the query text as an interest, against 1.0 for the whole history."""
    history_half_life_events: float = 10.0
    """Recency half-life of history events, in events."""
    interest_similarity: float = 0.5
    """Cosine above which history items join the same interest cluster."""


class RecommendationEngine:
    def __init__(
        self,
        bundle: ServedBundle,
        batcher: TokenBudgetBatcher,
        retrieval: RetrievalConfig | None = None,
        ranking: RankingConfig | None = None,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.bundle = bundle
        self.batcher = batcher
        self.retrieval_config = retrieval or RetrievalConfig()
        self.ranking = ranking or RankingConfig()
        self.metrics = metrics or batcher.metrics
        self.retriever = Retriever(bundle.index, bundle.postings, self.retrieval_config)
        self.weights = weight_vector(bundle.ranker_weights)
        self._stage = {s: self.metrics.stage_latency.labels(s) for s in ("queue", "retrieve", "rank")}

    async def recommend(self, request: RecommendQuery, deadline: float | None = None) -> RecommendResult:
        started = time.perf_counter()
        query_vector, timing = None, EmbedTiming()
        if request.query.strip():
            vectors, timing = await self.batcher.embed([request.query], deadline)
            query_vector = vectors[0]
        return self._rank(request, query_vector, timing, started)

    async def recommend_many(
        self, requests: Sequence[RecommendQuery], deadline: float | None = None
    ) -> list[RecommendResult]:
        """One batcher call for all query texts, then retrieval and ranking per request."""
        started = time.perf_counter()
        texts = [r.query for r in requests if r.query.strip()]
        vectors, timing = await self.batcher.embed(texts, deadline) if texts else (None, EmbedTiming())
        results, position = [], 0
        for request in requests:
            vector = None
            if request.query.strip():
                vector, position = vectors[position], position + 1
            results.append(self._rank(request, vector, timing, started))
        return results

    # ---- the synchronous part --------------------------------------------------------------

    def _history(self, request: RecommendQuery) -> tuple[np.ndarray, np.ndarray]:
        """(history labels oldest..newest, disliked labels) from the user and the request."""
        label_of = self.bundle.catalog.label_of
        labels = np.empty(0, np.int64)
        disliked = np.empty(0, np.int64)
        if request.user_id:
            user = self.bundle.users.get(request.user_id)
            labels, disliked = user.labels, user.disliked
        if request.history:
            # Ids the catalog does not know (removed, or newer than the bundle) are skipped:
            # one stale id should not fail a caller's whole request.
            known = [label_of[i] for i in request.history if i in label_of]
            given = np.asarray(known, dtype=np.int64)
            labels = np.concatenate([labels, given])[-self.bundle.users.history_length:]
        return labels, disliked

    def _filter(self, request: RecommendQuery, history: np.ndarray, disliked: np.ndarray) -> ItemFilter:
        label_of = self.bundle.catalog.label_of
        excluded = [label_of[i] for i in request.exclude_item_ids if i in label_of]
        excluded.extend(disliked.tolist())  # dislike / not_interested suppress the item itself
        if request.exclude_interacted:
            excluded.extend(history.tolist())
        return ItemFilter(dict(request.attribute_equals), dict(request.attribute_in), tuple(excluded))

    def _rank(
        self, request: RecommendQuery, query_vector: np.ndarray | None, timing: EmbedTiming, started: float
    ) -> RecommendResult:
        t0 = time.perf_counter()
        history, disliked = self._history(request)
        vectors = self.bundle.index.vectors
        interests: list[Interest] = []
        if query_vector is not None:
            interests.append(Interest(query_vector, self.ranking.query_weight, "query"))
        weights = recency_weights(len(history), self.ranking.history_half_life_events)
        for interest in history_interests(
            vectors[history], max_interests=self.retrieval_config.max_interests,
            similarity_threshold=self.ranking.interest_similarity,
            half_life_events=self.ranking.history_half_life_events,
        ):
            interests.append(interest)
        item_filter = self._filter(request, history, disliked)
        if interests:
            candidates = self.retriever.retrieve(interests, request.k, item_filter)
            labels, retrieval_scores = candidates.labels, candidates.scores
        else:  # a user we know nothing about: the most popular items that pass the filter
            labels, retrieval_scores = self._popular(request.k, item_filter)
        t1 = time.perf_counter()
        ctx = RankingContext(
            query_vector=query_vector,
            history_labels=history,
            history_weights=weights / weights.sum() if len(weights) else weights,
            disliked_labels=disliked,
            now=time.time(),
        )
        features, history_sims = compute_features(labels, retrieval_scores, ctx, self.bundle.tables, vectors)
        scores = features @ self.weights
        chosen = select(scores, vectors[labels], request.k, request.diversity)
        items = [self._item(labels[i], scores[i], features[i], history_sims, i, request, history)
                 for i in chosen]
        t2 = time.perf_counter()
        self._stage["queue"].observe(timing.queue_s)
        self._stage["retrieve"].observe(t1 - t0)
        self._stage["rank"].observe(t2 - t1)
        timings = StageTimings(
            queue_us=int(timing.queue_s * 1e6), encode_us=int(timing.encode_s * 1e6),
            retrieve_us=int((t1 - t0) * 1e6), rank_us=int((t2 - t1) * 1e6),
            total_us=int((t2 - started) * 1e6),
        )
        return RecommendResult(items, self.bundle.version, timings)

    def _popular(self, k: int, item_filter: ItemFilter) -> tuple[np.ndarray, np.ndarray]:
        from server.retrieval.filters import allowed_mask

        popularity = self.bundle.tables.popularity
        mask = allowed_mask(item_filter, self.bundle.postings, self.bundle.index.present)
        labels = np.flatnonzero(mask[: len(popularity)])
        top = labels[np.argsort(-popularity[labels], kind="stable")[: max(k, 1) * 3]]
        return top, np.zeros(len(top), np.float32)

    def _item(self, label, score, row, history_sims, position, request, history) -> ScoredResult:
        catalog = self.bundle.catalog
        result = ScoredResult(
            item_id=catalog.item_ids[label], title=catalog.titles[label],
            score=float(score), retrieval_score=float(row[COLUMN["retrieval"]]),
        )
        if request.explain:
            result.contributions = contributions(row, self.weights)
            best_sim = best_cooc = None
            if history_sims is not None and len(history):
                others = history != label  # never explain an item by itself
                if others.any():
                    sims = np.where(others, history_sims[position], -np.inf)
                    best_sim = int(np.argmax(sims))
                    cooc_row = self.bundle.tables.cooccurrence[history][:, [label]].toarray().ravel()
                    cooc_row[~others] = 0
                    best_cooc = int(np.argmax(cooc_row)) if cooc_row.max() > 0 else None
            result.reason = reason(
                row, self.weights, query=request.query,
                history_titles=[catalog.titles[h] for h in history],
                best_history_by_similarity=best_sim, best_history_by_cooccurrence=best_cooc,
            )
        return result
