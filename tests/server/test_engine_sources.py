"""The engine's hybrid candidates on a real small bundle (tiny encoder, real demo sample):
provenance, filters across sources, explanations naming the right source and history item,
new users / cold items / query-only requests, deadlines, and provenance over real gRPC."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from export.neighbours import NeighbourTable
from protos import recommender_pb2 as pb
from server.batching.batcher import BatcherConfig, EmbedTiming, TokenBudgetBatcher
from server.engine import RankingConfig, RecommendationEngine
from server.errors import DeadlineExceeded
from server.metrics import ServerMetrics
from server.ranking.features import COLUMN, FEATURES, without_interactions
from server.requests import RecommendQuery
from server.retrieval.sources.base import SOURCE_NAMES
from server.retrieval.sources.cold_bridge import ColdBridge
from server.served_bundle import ServedBundle


@pytest.fixture(scope="module")
def bundle(small_bundle) -> ServedBundle:
    return ServedBundle.load(small_bundle)


@pytest.fixture
async def engine(bundle):
    metrics = ServerMetrics()
    batcher = TokenBudgetBatcher(bundle.backend, BatcherConfig(), metrics)
    await batcher.start()
    try:
        yield RecommendationEngine(bundle, batcher, metrics=metrics)
    finally:
        await batcher.stop()


def busy_user(bundle: ServedBundle, at_least: int = 8) -> str:
    return next(u for u, labels in sorted(bundle.users._bundle.items()) if len(labels) >= at_least)


async def test_candidates_come_from_every_source_with_provenance(engine, bundle):
    user = busy_user(bundle)
    found = engine.candidates(RecommendQuery(user_id=user, k=10))
    counts = found.merged.count_by_source()
    # every item of the demo sample was bought: the cold bridge has nothing to reach
    assert counts["cold_bridge"] == 0 and len(bundle.tables.cold_bridge.links) == len(bundle.tables.item_knn)
    assert all(counts[name] > 0 for name in SOURCE_NAMES if name != "cold_bridge"), counts
    assert len(found.labels) == len(np.unique(found.labels))  # de-duplicated
    assert 100 <= len(found.labels) <= engine.retrieval_config.candidates * 1.2
    scored = engine.score(found)
    assert scored.features.shape == (len(found.labels), len(FEATURES))
    # a candidate item-kNN found has an item-kNN feature; one only popularity found, none
    knn_only = (found.merged.ranks[:, SOURCE_NAMES.index("item_knn")] >= 0)
    assert (scored.features[knn_only, COLUMN["item_knn"]] > 0).all()
    assert (scored.features[knn_only, COLUMN["rank_item_knn"]] > 0).all()


async def test_filters_exclusions_and_history_apply_to_every_source(engine, bundle):
    user = busy_user(bundle)
    history = bundle.users.get(user).labels
    colour_items = [i for i, a in enumerate(bundle.catalog.attributes) if a]
    name, value = next(iter(bundle.catalog.attributes[colour_items[0]].items()))
    popular = np.argsort(-bundle.tables.popularity)[:5]
    excluded = tuple(bundle.catalog.item_ids[i] for i in popular)
    request = RecommendQuery(user_id=user, k=20, attribute_equals={name: value},
                             exclude_item_ids=excluded, exclude_interacted=True)
    found = engine.candidates(request)
    assert len(found.labels)
    for label in found.labels.tolist():
        assert bundle.catalog.attributes[label].get(name) == value
        assert label not in set(popular.tolist()) and label not in set(history.tolist())


async def test_explanations_name_the_source_and_the_history_item(engine, bundle):
    titles, tables = bundle.catalog.titles, bundle.tables
    named = set()
    for user in [u for u, h in sorted(bundle.users._bundle.items()) if len(h) >= 5][:15]:
        result = await engine.recommend(RecommendQuery(user_id=user, k=10, explain=True))
        history = bundle.users.get(user).labels
        for item in result.items:
            label = bundle.catalog.label_of[item.item_id]
            assert item.sources, item
            if item.reason.startswith("customers who bought "):
                named.add("item_knn")
                assert "item_knn" in item.sources
                x = item.reason[len("customers who bought "):-len(" also bought this")]
                rows = [h for h in history.tolist() if titles[h] == x]
                assert rows and any(label in tables.item_knn.labels[h].tolist() for h in rows)
            elif item.reason.startswith("often bought after "):
                named.add("transitions")
                assert "transitions" in item.sources
                x = item.reason[len("often bought after "):]
                rows = [h for h in history[-3:].tolist() if titles[h] == x]
                assert rows and any(label in tables.transitions.labels[h].tolist() for h in rows)
            elif item.reason.startswith("similar to "):
                named.add("content")
                assert "content" in item.sources
                assert item.reason[len("similar to "):] in {titles[h] for h in history.tolist()}
            elif item.reason == "you bought this before":
                named.add("repeat")
                assert "repeat" in item.sources and label in set(history.tolist())
            elif item.reason in ("popular right now", "popular this week"):
                named.add("popular")
                assert {"popular", "trending"} & set(item.sources)
            assert item.reason != f"similar to {item.title}"  # never explained by itself
    assert {"item_knn", "transitions"} <= named


async def test_query_only_and_new_user_requests_still_work(engine, bundle):
    title = bundle.catalog.titles[7]
    by_query = await engine.recommend(RecommendQuery(query=title, k=5, explain=True))
    assert len(by_query.items) == 5
    assert all(i.sources == ["content"] for i in by_query.items)  # no unrelated best-sellers
    assert any(i.reason.startswith("matches your search") for i in by_query.items)

    stranger = await engine.recommend(RecommendQuery(user_id="nobody-ever", k=5, explain=True))
    assert len(stranger.items) == 5
    assert all(set(i.sources) <= {"popular", "trending"} for i in stranger.items)
    assert all(i.reason.startswith("popular") for i in stranger.items)



async def test_a_cold_item_is_found_by_its_text_and_can_seed_a_history(bundle):
    """An item nobody interacted with (its collaborative rows and popularity blanked)."""
    cold = 7
    tables = dataclasses.replace(
        bundle.tables, popularity=bundle.tables.popularity.copy(),
        trending=bundle.tables.trending.copy(),
        item_knn=NeighbourTable(bundle.tables.item_knn.labels.copy(), bundle.tables.item_knn.scores),
        transitions=NeighbourTable(bundle.tables.transitions.labels.copy(),
                                   bundle.tables.transitions.scores))
    tables.popularity[cold] = tables.trending[cold] = 0
    for table in (tables.item_knn, tables.transitions):
        table.labels[cold] = -1
        table.labels[table.labels == cold] = -1
    tables.cold_bridge = ColdBridge.derive(tables.item_knn, bundle.index)  # as a load derives it
    metrics = ServerMetrics()
    batcher = TokenBudgetBatcher(bundle.backend, BatcherConfig(), metrics)
    await batcher.start()
    try:
        served = dataclasses.replace(bundle, overlay=bundle.overlay.with_tables(tables, bundle.users))
        engine = RecommendationEngine(served, batcher, metrics=metrics)
        title = bundle.catalog.titles[cold]
        vectors, _ = await batcher.embed([title])
        found = engine.candidates(RecommendQuery(query=title, k=10), vectors[0])
        position = found.labels.tolist().index(cold)  # the content source found it
        assert found.merged.sources_of(position) == ["content"]
        assert found.merged.ranks[position, 0] <= 2  # among the nearest to its own title
        # new_item_boost lifts exactly the rows without interactions, this one among them
        boosted = RecommendationEngine(served, batcher, ranking=RankingConfig(new_item_boost=2.0),
                                       metrics=metrics)
        plain, lifted = engine.score(found), boosted.score(found)
        cold_rows = without_interactions(plain.features)
        assert cold_rows[position] and not cold_rows.all()
        np.testing.assert_allclose(lifted.scores - plain.scores, 2.0 * cold_rows, atol=1e-5)
        # the bridge: a history whose item-kNN neighbours include an item it reads like
        like = int(np.flatnonzero((tables.cold_bridge.links.labels == cold).any(axis=1))[0])
        buyer = int(np.flatnonzero(tables.item_knn.labels[:, 0] == like)[0])
        bridged = engine.candidates(RecommendQuery(history=(bundle.catalog.item_ids[buyer],), k=10))
        position = bridged.labels.tolist().index(cold)
        assert "cold_bridge" in bridged.merged.sources_of(position)
        seeded = await engine.recommend(RecommendQuery(history=(bundle.catalog.item_ids[cold],), k=5))
        assert len(seeded.items) == 5 and any("content" in i.sources for i in seeded.items)
    finally:
        await batcher.stop()


async def test_deadline_is_checked_between_stages(engine, bundle):
    request = RecommendQuery(user_id=busy_user(bundle), k=10, explain=True)
    with pytest.raises(DeadlineExceeded):
        engine.rank(request, None, EmbedTiming(), time.perf_counter(), deadline=time.monotonic() - 1)
    with pytest.raises(DeadlineExceeded):
        await engine.recommend_many([request, request], deadline=time.monotonic() - 1)


async def test_heavy_and_batched_requests_rank_off_the_loop_with_the_same_answer(engine, bundle):
    user = busy_user(bundle)
    light = await engine.recommend(RecommendQuery(user_id=user, k=10))  # inline
    explained = await engine.recommend(RecommendQuery(user_id=user, k=10, explain=True))
    batch = await engine.recommend_many([RecommendQuery(user_id=user, k=10)] * 3)
    ids = [i.item_id for i in light.items]
    assert [i.item_id for i in explained.items] == ids
    assert all([i.item_id for i in r.items] == ids for r in batch)
    big = RecommendQuery(user_id=user, k=200)
    heavy = await engine.recommend(big)
    inline = engine.rank(big, None, EmbedTiming(), time.perf_counter())
    assert [i.item_id for i in heavy.items] == [i.item_id for i in inline.items]
    assert len(heavy.items) == 200


async def test_recommend_over_grpc_carries_sources(running_server, bundle):
    _, stub, _ = running_server
    user = busy_user(bundle)
    response = await stub.Recommend(pb.RecommendRequest(user_id=user, k=10, explain=True))
    assert len(response.items) == 10
    for item in response.items:
        assert item.sources and set(item.sources) <= set(SOURCE_NAMES)
        assert item.reason


async def test_record_interactions_teach_the_item_to_item_and_transition_tables(running_server):
    server, stub, _ = running_server
    tables = server.state.bundle.tables
    a = next(i for i in range(len(tables.transitions)) if (tables.transitions.labels[i] >= 0).any())
    b = next(j for j in range(len(tables.transitions))
             if j != a and j not in tables.transitions.labels[a].tolist()
             and j not in tables.item_knn.labels[a].tolist())
    ids = server.state.bundle.catalog.item_ids
    now = int(time.time() * 1000)
    for n in range(10):  # ten users buy a then b: enough to enter even a full row
        user = f"live-neighbour-{n}"
        await stub.RecordInteractions(pb.RecordInteractionsRequest(events=[
            pb.Interaction(user_id=user, item_id=ids[a], event="purchase", timestamp_ms=now),
            pb.Interaction(user_id=user, item_id=ids[b], event="purchase", timestamp_ms=now + 1)]))
    assert b in tables.transitions.labels[a].tolist()  # "often bought after a"
    assert b in tables.item_knn.labels[a].tolist() and a in tables.item_knn.labels[b].tolist()


async def test_history_interests_go_through_the_bundle_adapter(bundle):
    """The content source asks the index with normalize(interest @ A); A = -I asks it for the
    items least like the history, and a query text's interest stays as it is."""
    from server.retrieval.interests import history_interests

    user = busy_user(bundle)
    flipped = dataclasses.replace(bundle, history_adapter=-np.eye(bundle.backend.dim, dtype=np.float32))
    metrics = ServerMetrics()
    batcher = TokenBudgetBatcher(bundle.backend, BatcherConfig(), metrics)
    plain = RecommendationEngine(bundle, batcher, metrics=metrics)
    mapped = RecommendationEngine(flipped, batcher, metrics=metrics)
    query_vector = bundle.index.vectors[0]
    request = RecommendQuery(user_id=user, k=10)
    before, after = plain.candidates(request, query_vector), mapped.candidates(request, query_vector)
    history = [i for i in before.context.interests if i.source == "history"]
    assert history and len(history) == len(history_interests(
        bundle.index.vectors[before.context.history], max_interests=plain.retrieval_config.max_interests,
        similarity_threshold=plain.ranking.interest_similarity,
        half_life_events=plain.ranking.history_half_life_events))
    for a, b in zip(before.context.interests, after.context.interests):
        expected = a.vector if a.source == "query" else -a.vector
        np.testing.assert_allclose(b.vector, expected, atol=1e-6)
    # what content finds for the history moves away from it
    content = SOURCE_NAMES.index("content")
    def content_similarity(found):
        labels = found.labels[found.merged.ranks[:, content] >= 0]
        return float((bundle.index.vectors[labels] @ history[0].vector).mean())
    assert content_similarity(after) < content_similarity(before)
