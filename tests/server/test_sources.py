"""Each candidate source on a toy catalog: known neighbours come back, filters hold, merge keeps provenance."""

from __future__ import annotations

import hnswlib
import pytest
import numpy as np

from export.neighbours import item_knn_table, transition_table
from server.ranking.features import transition_weights
from server.retrieval.filters import AttributePostings, ItemFilter
from server.retrieval.interests import Interest
from server.retrieval.merge import merge, quotas
from server.retrieval.retriever import RetrievalConfig, Retriever
from server.retrieval.sources.base import ItemGate, SourceContext, SourceList
from server.retrieval.sources.content import ContentSource
from server.retrieval.sources.item_knn import ItemKnnSource
from server.retrieval.sources.popular import RankedItemsSource
from server.retrieval.sources.repeat import RepeatSource
from server.retrieval.sources.transitions import TransitionSource
from server.retrieval.vector_index import VectorIndex

N = 8
# colour of each item: 0-3 red, 4-7 blue
ATTRS = [{"colour": "red" if i < 4 else "blue"} for i in range(N)]
# (user, item) sequences in time order. Item 0's buyers also buy 1 (3 users) and 2 (1 user);
# 5 always comes right after 0.
SEQUENCES = {0: [0, 5, 1], 1: [0, 5, 1], 2: [0, 5, 1, 2], 3: [3, 4], 4: [6, 7]}


def sorted_events():
    users = np.asarray([u for u, items in SEQUENCES.items() for _ in items], np.int64)
    labels = np.asarray([i for items in SEQUENCES.values() for i in items], np.int64)
    return users, labels


def context(history, *, item_filter=ItemFilter(), present=None, interests=(), k=3):
    present = np.ones(N, bool) if present is None else present
    history = np.asarray(history, np.int64)
    weights = np.ones(len(history), np.float32) / max(len(history), 1)
    recent = transition_weights(len(history))  # as the engine weighs them: newest most
    gate = ItemGate(item_filter, AttributePostings(ATTRS), present)
    return SourceContext(history, weights, recent, list(interests), gate, k)


def test_item_knn_returns_co_bought_items_strongest_first():
    users, labels = sorted_events()
    source = ItemKnnSource(item_knn_table(users, labels, N, width=4, per_user=10))
    found = source.find(context([0]), quota=10)
    assert found.labels[:3].tolist() == [1, 5, 2]  # ties by label
    assert found.scores[0] == found.scores[1] > found.scores[2] > 0  # 3 shared users vs 1
    assert 0 not in found.labels.tolist()  # never its own neighbour
    assert not {3, 4, 6, 7} & set(found.labels.tolist())  # other users' worlds


def test_every_source_honours_filters_exclusions_and_deletions():
    users, labels = sorted_events()
    knn = ItemKnnSource(item_knn_table(users, labels, N, width=4, per_user=10))
    trans = TransitionSource(transition_table(users, labels, N, width=4, window=2))
    popular = RankedItemsSource("popular", lambda: np.linspace(1.0, 0.3, N).astype(np.float32))
    present = np.ones(N, bool)
    present[2] = False  # deleted
    ctx = context([0], item_filter=ItemFilter(attribute_equals={"colour": "red"},
                                              exclude_labels=(1,)), present=present)
    for source in (knn, trans, popular):
        got = set(source.find(ctx, quota=10).labels.tolist())
        assert not got & {1, 2}, source.name  # excluded, deleted
        assert all(ATTRS[i]["colour"] == "red" for i in got), source.name
    assert popular.find(ctx, quota=2).labels.tolist() == [0, 3]  # most popular allowed items


def test_repeat_returns_the_history_most_and_latest_chosen_first_within_the_gate():
    source = RepeatSource(np.full(N, 0.2, np.float32))
    history = [3, 0, 3, 1, 0, 3]  # 3 thrice, 0 twice (once recently), 1 once
    ctx = context(history)
    ctx.history_weights = np.asarray([0.05, 0.1, 0.1, 0.15, 0.25, 0.35], np.float32)
    found = source.find(ctx, quota=10)
    assert found.labels.tolist() == [3, 0, 1]  # recency-weighted counts 0.5, 0.35, 0.15
    assert found.scores.tolist() == pytest.approx([0.5, 0.35, 0.15])
    assert source.find(ctx, quota=2).labels.tolist() == [3, 0]
    blue = context(history + [5], item_filter=ItemFilter(attribute_equals={"colour": "blue"}))
    assert source.find(blue, quota=10).labels.tolist() == [5]  # filters hold
    excluded = context(history, item_filter=ItemFilter(exclude_labels=(3, 0, 1)))
    assert source.find(excluded, quota=10).labels.size == 0  # exclude_interacted empties it
    assert not source.active(context([]))
    assert not RepeatSource(np.zeros(N, np.float32)).active(ctx)  # nobody ever bought again


def test_transitions_follow_the_last_items():
    users, labels = sorted_events()
    source = TransitionSource(transition_table(users, labels, N, width=4, window=1))
    found = source.find(context([3, 0]), quota=5)
    assert found.labels.tolist() == [5, 4]  # after 0 (newest) first, then after 3
    assert source.find(context([7]), quota=5).labels.size == 0  # nothing ever follows 7


def test_content_source_finds_nearest_items_and_sorts_them():
    vectors = np.eye(N, dtype=np.float32)[:, :N]
    vectors[1] = vectors[0] * 0.9 + vectors[1] * 0.1
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = hnswlib.Index(space="ip", dim=N)
    index.init_index(max_elements=N, M=8, ef_construction=50)
    index.add_items(vectors, np.arange(N))
    served = VectorIndex(index, default_ef=16)
    source = ContentSource(Retriever(served, AttributePostings(ATTRS), RetrievalConfig()))
    ctx = context([], interests=[Interest(vectors[0], 1.0, "query")], k=2)
    found = source.find(ctx, quota=3)
    assert found.labels[:2].tolist() == [0, 1]
    assert np.all(np.diff(found.scores) <= 0)
    blue = context([], interests=[Interest(vectors[0], 1.0, "query")], k=2,
                   item_filter=ItemFilter(attribute_equals={"colour": "blue"}))
    assert all(ATTRS[i]["colour"] == "blue" for i in source.find(blue, quota=3).labels)


def test_merge_deduplicates_and_keeps_each_sources_rank():
    a = SourceList(np.array([7, 3, 5]), np.array([0.9, 0.8, 0.1], np.float32))
    b = SourceList(np.array([3, 1]), np.array([0.5, 0.4], np.float32))
    merged = merge({"content": a, "item_knn": b})
    assert merged.labels.tolist() == [1, 3, 5, 7]
    three = merged.labels.tolist().index(3)
    assert merged.sources_of(three) == ["item_knn", "content"]  # rank 0 there, 1 here
    assert merged.ranks[three, 0] == 1 and merged.ranks[three, 1] == 0
    assert merged.sources_of(merged.labels.tolist().index(7)) == ["content"]
    assert merged.count_by_source()["item_knn"] == 2


def test_quotas_share_the_budget_and_inactive_sources_leave_theirs_unused():
    shares = {"content": 0.4, "item_knn": 0.25, "transitions": 0.15, "popular": 0.1, "trending": 0.1}
    full = quotas(300, shares, list(shares), k=10)
    assert sum(full.values()) == 300 and full["content"] == 120
    no_history = quotas(300, shares, ["content", "popular", "trending"], k=10)
    assert no_history == {"content": 120, "popular": 30, "trending": 30}
    assert quotas(300, shares, ["content"], k=500)["content"] == 500  # at least k


def test_live_bump_adds_and_strengthens_neighbours():
    users, labels = sorted_events()
    table = item_knn_table(users, labels, N, width=2, per_user=10)
    before = dict(zip(table.labels[3].tolist(), table.scores[3].tolist()))
    table.bump(3, 6, 0.01)  # weaker than both kept neighbours? row 3 has one (4): free slot
    assert 6 in table.labels[3].tolist()
    table.bump(3, 4, 0.5)
    assert float(table.scores[3][table.labels[3].tolist().index(4)]) == min(1.0, before[4] + 0.5)
    weakest = float(table.scores[3].min())
    table.bump(3, 7, weakest * 0.6)  # row full, weaker than every neighbour: kept aside
    assert 7 not in table.labels[3].tolist()
    table.bump(3, 7, weakest * 0.6)  # together stronger than the weakest: takes its slot
    assert 7 in table.labels[3].tolist() and not table.pending
    table.bump(99, 1, 1.0)  # an item added live (no row yet): ignored, not an error


def test_a_live_interaction_strengthens_item_knn_and_transitions():
    from server.ranking.features import FeatureTables

    users, labels = sorted_events()
    tables = FeatureTables(np.zeros(N, np.float32), None, np.zeros(N), {},
                           item_knn=item_knn_table(users, labels, N, width=3, per_user=10),
                           transitions=transition_table(users, labels, N, width=3, window=1))
    assert 6 not in tables.transitions.labels[3].tolist()
    tables.record_interaction(6, previous=np.array([0, 3]), amount=0.4, window=5)
    assert 6 in tables.transitions.labels[3].tolist()  # 3 was just before 6
    assert 6 in tables.item_knn.labels[3].tolist() and 3 in tables.item_knn.labels[6].tolist()
    ctx = context([3])
    assert 6 in ItemKnnSource(tables.item_knn).find(ctx, quota=5).labels.tolist()


def test_popular_walks_its_order_past_exclusions_and_answers_without_interactions():
    scores = np.linspace(1.0, 0.3, N).astype(np.float32)
    popular = RankedItemsSource("popular", lambda: scores)
    present = np.ones(N, bool)
    present[1] = False
    found = popular.find(context([], item_filter=ItemFilter(exclude_labels=(0, 2)), present=present), 3)
    assert found.labels.tolist() == [3, 4, 5]
    cold_start = RankedItemsSource("popular", lambda: np.zeros(N, np.float32))
    assert cold_start.find(context([]), quota=3).labels.tolist() == [0, 1, 2]  # catalog order
