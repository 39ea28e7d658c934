"""RecommendationEngine: request -> candidates from every source -> features -> ranked, explained items.

Plain asyncio Python (no gRPC): the service layer converts protobufs to RecommendQuery and
back. Only the query text goes through the batcher. The two public steps, `candidates()`
and `score()`, are what `recommend` runs and what train/ calls, so training sees exactly
the candidates and feature rows the server ranks.

The history is resolved on the event loop (live writes change it there); the rest is
synchronous numpy. Light requests run it inline (cheaper than a thread hop); heavy ones
(large k, diversity, explanations, batches) run in a worker thread so the loop keeps
serving. Deadlines are checked between stages and inside the long loops.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from export.settings import RecserveSettings, settings_config
from server.batching.batcher import EmbedTiming, TokenBudgetBatcher
from server.errors import DeadlineExceeded
from server.metrics import ServerMetrics
from server.ranking.explain import HistoryEvidence
from server.ranking.features import (COLUMN, RankingContext, compute_features, transition_weights,
                                     without_interactions)
from server.ranking.scorer import LinearScorer, Ranker, contributions, reason, select
from server.requests import RecommendQuery, RecommendResult, ScoredResult, StageTimings
from server.retrieval.filters import ItemFilter
from server.retrieval.interests import Interest, history_interests, mapped, recency_weights
from server.retrieval.merge import MergedCandidates, merge, quotas
from server.retrieval.retriever import RetrievalConfig, Retriever, interest_scores
from server.retrieval.sources.base import ItemGate, SourceContext
from server.retrieval.sources.cold_bridge import ColdBridgeSource
from server.retrieval.sources.content import ContentSource
from server.retrieval.sources.item_knn import ItemKnnSource
from server.retrieval.sources.popular import RankedItemsSource
from server.retrieval.sources.repeat import RepeatSource
from server.retrieval.sources.transitions import TransitionSource
from server.served_bundle import ServedBundle


class RankingConfig(RecserveSettings):
    model_config = settings_config("ranking")

    query_weight: float = 1.0
    """Weight of the query text as an interest, against 1.0 for the whole history."""
    history_half_life_events: float = 10.0
    """Recency half-life of history events, in events."""
    interest_similarity: float = 0.5
    """Cosine above which history items join the same interest cluster."""
    offload_min_k: int = 100
    """Requests asking for at least this many items rank in a worker thread, off the event loop."""
    offload_explain: bool = True
    """Requests with explanations or diversity rank in a worker thread, off the event loop."""
    new_item_boost: float = 0.0
    """Log-odds added to the ranker's score of candidates nobody has interacted with yet: new
    items' exposure against warm items' accuracy. 0 ranks them as the ranker was fitted; on
    Online Retail's cold-items protocol 1.0 took cold items 38 -> 83 % of warm items'
    Recall@50 for NDCG@10 0.1347 -> 0.1311 (docs/EVALUATION.md). A product choice: the data
    does not say how much exposure new items should get."""


@dataclass
class CandidateSet:
    """One request's candidates (`engine.candidates`) with what they were found from."""

    request: RecommendQuery
    context: SourceContext
    ranking: RankingContext
    merged: MergedCandidates  # labels + provenance (rank and score in each source)
    retrieval: np.ndarray  # float32 [C] content similarity of every candidate
    vectors: np.ndarray  # float32 [C, dim] the candidates' item vectors (gathered once)

    @property
    def labels(self) -> np.ndarray:
        return self.merged.labels


@dataclass
class ScoredCandidates:
    """`engine.score`: every candidate's feature row and ranker score."""

    candidates: CandidateSet
    features: np.ndarray  # float32 [C, len(FEATURES)]
    scores: np.ndarray  # float32 [C]
    history_sims: np.ndarray | None  # [C, H] cosine to each history item (explanations)


def _check(deadline: float | None, stage: str) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise DeadlineExceeded(f"deadline passed during {stage}")


class RecommendationEngine:
    def __init__(
        self,
        bundle: ServedBundle,
        batcher: TokenBudgetBatcher,
        retrieval: RetrievalConfig | None = None,
        ranking: RankingConfig | None = None,
        metrics: ServerMetrics | None = None,
        ranker: Ranker | None = None,
    ) -> None:
        self.bundle = bundle
        self.batcher = batcher
        self.retrieval_config = retrieval or RetrievalConfig()
        self.ranking = ranking or RankingConfig()
        self.metrics = metrics or batcher.metrics
        self.retriever = Retriever(bundle.index, bundle.postings, self.retrieval_config)
        self.linear = LinearScorer(bundle.ranker_weights)
        self.ranker: Ranker = ranker or bundle.ranker or self.linear
        tables = bundle.tables
        self.sources = [
            ContentSource(self.retriever),
            ItemKnnSource(tables.item_knn),
            TransitionSource(tables.transitions),
            RankedItemsSource("popular", lambda: tables.popularity),
            RankedItemsSource("trending", lambda: tables.trending),
            RepeatSource(tables.repeat_rate),
            ColdBridgeSource(tables, bundle.index),  # after item_knn: it reads that source's aggregate
        ]
        config = self.retrieval_config
        self.shares = {"content": config.content_share, "item_knn": config.item_knn_share,
                       "transitions": config.transitions_share, "popular": config.popular_share,
                       "trending": config.trending_share, "repeat": config.repeat_share,
                       "cold_bridge": config.cold_bridge_share}
        self._stage = {s: self.metrics.stage_latency.labels(s) for s in ("queue", "retrieve", "rank")}

    @property
    def weights(self) -> np.ndarray:
        """The linear weights (scoring fallback, explanations)."""
        return self.linear.weights

    @weights.setter
    def weights(self, weights: np.ndarray) -> None:
        """Replace the linear weights; a linear engine also ranks with them."""
        uses_linear = self.ranker is self.linear
        self.linear = LinearScorer(np.asarray(weights, np.float32))
        if uses_linear:
            self.ranker = self.linear

    # ---- async entry points -----------------------------------------------------------------

    async def recommend(self, request: RecommendQuery, deadline: float | None = None) -> RecommendResult:
        started = time.perf_counter()
        query_vector, timing = None, EmbedTiming()
        if request.query.strip():
            vectors, timing = await self.batcher.embed([request.query], deadline)
            query_vector = vectors[0]
        history = self.resolve_history(request)
        if self._heavy(request):
            return await asyncio.to_thread(self.rank, request, query_vector, timing, started,
                                           deadline, history)
        return self.rank(request, query_vector, timing, started, deadline, history)

    async def recommend_many(
        self, requests: Sequence[RecommendQuery], deadline: float | None = None
    ) -> list[RecommendResult]:
        """One batcher call for all query texts, then retrieval and ranking in a worker thread."""
        started = time.perf_counter()
        texts = [r.query for r in requests if r.query.strip()]
        vectors, timing = await self.batcher.embed(texts, deadline) if texts else (None, EmbedTiming())
        jobs, position = [], 0
        for request in requests:
            vector = None
            if request.query.strip():
                vector, position = vectors[position], position + 1
            jobs.append((request, vector, self.resolve_history(request)))

        def rank_all() -> list[RecommendResult]:
            return [self.rank(r, v, timing, started, deadline, h) for r, v, h in jobs]

        return await asyncio.to_thread(rank_all)

    def _heavy(self, request: RecommendQuery) -> bool:
        return request.k >= self.ranking.offload_min_k or (
            self.ranking.offload_explain and (request.explain or request.diversity > 0))

    # ---- the public synchronous steps -------------------------------------------------------

    def resolve_history(self, request: RecommendQuery) -> tuple[np.ndarray, np.ndarray]:
        """(history labels oldest..newest, disliked labels) from the user and the request.

        The newest `users.history_length` items are used (the bundle's manifest says how
        many); ids the catalog does not know (removed, or newer than the bundle) are skipped.
        """
        label_of = self.bundle.catalog.label_of
        labels = np.empty(0, np.int64)
        disliked = np.empty(0, np.int64)
        if request.user_id:
            user = self.bundle.users.get(request.user_id)
            labels, disliked = user.labels, user.disliked
        if request.history:
            known = [label_of[i] for i in request.history if i in label_of]
            given = np.asarray(known, dtype=np.int64)
            labels = np.concatenate([labels, given])[-self.bundle.users.history_length:]
        return labels, disliked

    def candidates(self, request: RecommendQuery, query_vector: np.ndarray | None = None,
                   deadline: float | None = None,
                   history: tuple[np.ndarray, np.ndarray] | None = None) -> CandidateSet:
        """Every source's candidates for the request, merged with provenance, filters applied."""
        labels, disliked = history if history is not None else self.resolve_history(request)
        vectors = self.bundle.index.vectors
        interests: list[Interest] = []
        if query_vector is not None:
            interests.append(Interest(query_vector, self.ranking.query_weight, "query"))
        interests.extend(mapped(history_interests(
            vectors[labels], max_interests=self.retrieval_config.max_interests,
            similarity_threshold=self.ranking.interest_similarity,
            half_life_events=self.ranking.history_half_life_events), self.bundle.history_adapter))
        weights = recency_weights(len(labels), self.ranking.history_half_life_events)
        weights = weights / weights.sum() if len(weights) else weights
        recent = transition_weights(len(labels))
        gate = ItemGate(self._filter(request, labels, disliked), self.bundle.postings,
                        self.bundle.index.present)
        context = SourceContext(labels, weights, recent, interests, gate, request.k)
        active = [s for s in self.sources if s.active(context)]
        budget = quotas(max(self.retrieval_config.candidates, request.k), self.shares,
                        [s.name for s in active], request.k)
        found = {}
        for source in (s for s in active if s.name in budget):  # a share of 0 turns a source off
            _check(deadline, f"candidate source {source.name}")
            found[source.name] = source.find(context, budget[source.name])
        merged = merge(found)
        ranking = RankingContext(query_vector=query_vector, history_labels=labels,
                                 history_weights=weights, disliked_labels=disliked,
                                 now=time.time(), recent_weights=recent,
                                 neighbour_scores=context.neighbour_scores,
                                 expectation_head=context.expectation_head)
        candidate_vectors = vectors[merged.labels]
        retrieval = interest_scores(candidate_vectors, interests)
        return CandidateSet(request, context, ranking, merged, retrieval, candidate_vectors)

    def score(self, candidates: CandidateSet, deadline: float | None = None) -> ScoredCandidates:
        """Feature rows and ranker scores of every candidate."""
        _check(deadline, "ranking")
        features, history_sims = compute_features(
            candidates.labels, candidates.retrieval, candidates.ranking, self.bundle.tables,
            self.bundle.index.vectors, candidates.merged.ranks, candidates.vectors)
        scores = np.asarray(self.ranker.score(features), dtype=np.float32)
        if self.ranking.new_item_boost and len(scores):
            scores = scores + np.float32(self.ranking.new_item_boost) * without_interactions(features)
        return ScoredCandidates(candidates, features, scores, history_sims)

    def rank(self, request: RecommendQuery, query_vector: np.ndarray | None, timing: EmbedTiming,
             started: float, deadline: float | None = None,
             history: tuple[np.ndarray, np.ndarray] | None = None) -> RecommendResult:
        """candidates -> score -> select -> explain: the whole synchronous part of a request."""
        _check(deadline, "retrieval")
        t0 = time.perf_counter()
        found = self.candidates(request, query_vector, deadline, history)
        t1 = time.perf_counter()
        scored = self.score(found, deadline)
        chosen = select(scored.scores, found.vectors, request.k, request.diversity)
        evidence = None
        if request.explain:
            ctx = found.ranking
            evidence = HistoryEvidence(history=ctx.history_labels, history_weights=ctx.history_weights,
                                       recent_weights=ctx.recent_weights, tables=self.bundle.tables,
                                       titles=self.bundle.catalog.titles)
        items = []
        for position in chosen:
            if evidence is not None:
                _check(deadline, "explanations")
            items.append(self._item(scored, int(position), evidence))
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

    # ---- helpers ----------------------------------------------------------------------------

    def _filter(self, request: RecommendQuery, history: np.ndarray, disliked: np.ndarray) -> ItemFilter:
        label_of = self.bundle.catalog.label_of
        excluded = [label_of[i] for i in request.exclude_item_ids if i in label_of]
        excluded.extend(disliked.tolist())  # dislike / not_interested suppress the item itself
        if request.exclude_interacted:
            excluded.extend(history.tolist())
        return ItemFilter(dict(request.attribute_equals), dict(request.attribute_in), tuple(excluded))

    def _item(self, scored: ScoredCandidates, position: int,
              evidence: HistoryEvidence | None) -> ScoredResult:
        found, catalog = scored.candidates, self.bundle.catalog
        label = int(found.labels[position])
        row = scored.features[position]
        result = ScoredResult(
            item_id=catalog.item_ids[label], title=catalog.titles[label],
            score=float(scored.scores[position]), retrieval_score=float(row[COLUMN["retrieval"]]),
            sources=found.merged.sources_of(position),
        )
        if evidence is not None:
            result.contributions = contributions(row, self.linear.weights)
            sims = None if scored.history_sims is None else scored.history_sims[position]
            result.reason = reason(row, self.linear.weights, query=found.request.query,
                                   evidence=evidence.for_item(label, sims), sources=result.sources)
        return result
