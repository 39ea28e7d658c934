"""Opening a bundle for serving: load, start its batcher, warm up every bucket, smoke-test.

A ServingState is what one bundle version serves with; a reload builds a new one beside the
old and swaps (the old one keeps answering until then). No gRPC here.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from export.errors import BundleError
from export.runtime import RuntimeConfig
from server.batching.batcher import BatcherConfig, TokenBudgetBatcher
from server.engine import RankingConfig, RecommendationEngine
from server.metrics import ServerMetrics
from server.requests import RecommendQuery
from server.retrieval.retriever import RetrievalConfig
from server.served_bundle import ServedBundle

log = logging.getLogger(__name__)


@dataclass
class ServingConfigs:
    """The component configs one serving state is built from."""

    runtime: RuntimeConfig
    batcher: BatcherConfig
    retrieval: RetrievalConfig
    ranking: RankingConfig


@dataclass
class ServingState:
    bundle: ServedBundle
    batcher: TokenBudgetBatcher
    engine: RecommendationEngine
    in_flight: int = 0  # calls using this state now (a reload retires it when they are done)

    @property
    def version(self) -> str:
        return self.bundle.version

    @contextmanager
    def track(self) -> Iterator[None]:
        """Count a call as using this state while it runs."""
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        await self.batcher.stop()


def warmup_texts(max_length: int, buckets: tuple[int, ...], max_batch_tokens: int,
                 max_batch_size: int) -> list[list[str]]:
    """One batch per length bucket (as large as the budget allows), distinct texts each."""
    batches = []
    for bucket in buckets:
        if bucket > max_length and bucket != buckets[0]:
            break
        words = max(1, min(bucket, max_length) - 2)
        size = max(1, min(max_batch_size, max_batch_tokens // bucket))
        batches.append([f"warmup {i} " + "item " * (words - 2) for i in range(size)])
    return batches


async def open_serving_state(
    bundle_path: str | Path,
    configs: ServingConfigs,
    metrics: ServerMetrics,
    on_health_change: Callable[[bool], None] | None = None,
) -> ServingState:
    """Load and warm a bundle; raises (leaving nothing running) if any step fails."""
    bundle = await asyncio.to_thread(ServedBundle.load, bundle_path, configs.runtime)
    batcher = TokenBudgetBatcher(bundle.backend, configs.batcher, metrics, on_health_change)
    await batcher.start()
    try:
        engine = RecommendationEngine(bundle, batcher, configs.retrieval, configs.ranking, metrics)
        await warm_up(engine, configs.batcher, bundle.backend.tokenizer.max_length)
    except BaseException:
        await batcher.stop()
        raise
    return ServingState(bundle, batcher, engine)


async def warm_up(engine: RecommendationEngine, config: BatcherConfig, max_length: int) -> None:
    """Real inference over every bucket, then one end-to-end recommendation (smoke test)."""
    for texts in warmup_texts(max_length, config.buckets, config.max_batch_tokens, config.max_batch_size):
        await engine.batcher.embed(texts)
    engine.batcher.cache = type(engine.batcher.cache)(config.cache_size)  # don't keep warm-up texts
    await engine.batcher.release_memory()  # nor the largest warm-up batch's buffers
    catalog = engine.bundle.catalog
    if len(catalog):
        probe = RecommendQuery(query=catalog.titles[0] or "gift", k=5)
        result = await engine.recommend(probe)
        if not result.items:
            raise BundleError("smoke test failed: a catalog title returned no recommendations")
    log.info("bundle %s warmed up", engine.bundle.version)
