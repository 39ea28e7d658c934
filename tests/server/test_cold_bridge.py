"""The cold-item bridge on a toy catalog: items nobody bought are reached through the warm
items item-kNN expects, filters and deletions hold, live upserts join, and the ranker sees them
as items without interactions."""

from __future__ import annotations

import hnswlib
import numpy as np
import scipy.sparse as sp

from export.neighbours import item_knn_table
from server.ranking.features import (COLUMN, INTERACTION_FEATURES, FeatureTables, RankingContext,
                                     compute_features)
from server.retrieval.filters import AttributePostings, ItemFilter
from server.retrieval.sources.base import SOURCE_NAMES, ItemGate, SourceContext
from server.retrieval.sources.cold_bridge import ColdBridge, ColdBridgeSource
from server.retrieval.vector_index import VectorIndex

DIM = 12
N = 10  # 0-5 bought; 6-9 never: 8 reads like 1, 9 like 3, 6 and 7 like nothing bought
ATTRS = [{"colour": "red"} for _ in range(N)]
SEQUENCES = {0: [0, 1], 1: [0, 1], 2: [2, 3], 3: [4, 5]}  # 0's buyers buy 1


def _vector(*parts: tuple[int, float]) -> np.ndarray:
    v = np.zeros(DIM, np.float32)
    for axis, value in parts:
        v[axis] = value
    return v / np.linalg.norm(v)


def _catalog() -> tuple[VectorIndex, FeatureTables]:
    vectors = np.stack([_vector((i, 1.0)) for i in range(6)]
                       + [_vector((6, 1.0)), _vector((7, 1.0)),
                          _vector((1, 0.9), (8, 0.3)), _vector((3, 0.9), (9, 0.3))])
    graph = hnswlib.Index(space="ip", dim=DIM)
    graph.init_index(max_elements=N + 4, M=8, ef_construction=50)
    graph.add_items(vectors, np.arange(N))
    index = VectorIndex(graph, default_ef=32)
    users = np.asarray([u for u, items in SEQUENCES.items() for _ in items], np.int64)
    labels = np.asarray([i for items in SEQUENCES.values() for i in items], np.int64)
    knn = item_knn_table(users, labels, N, width=4, per_user=10)
    tables = FeatureTables(np.zeros(N, np.float32), None, np.zeros(N), {}, item_knn=knn,
                           cold_bridge=ColdBridge.derive(knn, index))
    return index, tables


def _context(history, tables, *, present, item_filter=ItemFilter()) -> SourceContext:
    history = np.asarray(history, np.int64)
    weights = np.ones(len(history), np.float32) / len(history)
    gate = ItemGate(item_filter, AttributePostings(ATTRS), present)
    return SourceContext(history, weights, weights, [], gate, k=3)


def test_cold_items_are_linked_from_their_nearest_warm_items_only():
    _, tables = _catalog()
    links = tables.cold_bridge.links
    linked = {int(w): set(links.labels[w][links.labels[w] >= 0].tolist()) for w in range(N)}
    assert linked[1] == {8} and linked[3] == {9}  # each cold item from the warm item it reads like
    assert not any(linked[w] for w in (0, 2, 4, 5, 6, 7, 8, 9))
    assert not (links.labels == 6).any()  # like nothing bought: no link (cosine 0)
    floor = tables.cold_bridge.floor
    assert floor[8] > 0.9 and floor[9] > 0.9  # fewer than WARM_NEIGHBOURS warm items like them
    assert np.isinf(floor[6]) and np.isinf(floor[0])  # like no warm item (but itself)


def test_the_bridge_finds_the_cold_item_like_what_item_knn_expects():
    index, tables = _catalog()
    source = ColdBridgeSource(tables, index)
    ctx = _context([0], tables, present=index.present)
    found = source.find(ctx, quota=5)
    assert found.labels.tolist() == [8]  # 0 -> (item-kNN) 1 -> (content) 8; never 9
    assert 0 < found.scores[0] <= 1
    excluded = _context([0], tables, present=index.present, item_filter=ItemFilter(exclude_labels=(8,)))
    assert source.find(excluded, quota=5).labels.size == 0  # exclusions hold
    index.delete(np.array([8]))
    assert source.find(_context([0], tables, present=index.present), quota=5).labels.size == 0
    assert source.find(_context([4], tables, present=index.present), quota=5).labels.size == 0


def test_an_item_upserted_live_is_linked_and_found():
    index, tables = _catalog()
    index.add(_vector((5, 0.9), (10, 0.3))[None, :], np.array([N]))  # new, reads like 5
    tables.cold_bridge.link(tables.item_knn, index, np.array([N]))
    ctx = _context([4], tables, present=index.present)
    assert ColdBridgeSource(tables, index).find(ctx, quota=5).labels.tolist() == [N]  # 4's buyers buy 5
    assert tables.cold_bridge.floor[N] > 0.9
    tables.cold_bridge.link(tables.item_knn, index, np.array([1]))  # warm: not linked
    assert not (tables.cold_bridge.links.labels == 1).any()


def test_a_bridged_item_is_ranked_as_the_cold_copies_teach():
    """No feature says "found by the bridge": the row is an item without interactions."""
    index, tables = _catalog()
    ctx = _context([0], tables, present=index.present)
    ColdBridgeSource(tables, index).find(ctx, quota=5)
    ranking = RankingContext(query_vector=None, history_labels=ctx.history,
                             history_weights=ctx.history_weights, now=0.0,
                             neighbour_scores=ctx.neighbour_scores)
    ranks = np.full((1, len(SOURCE_NAMES)), -1, np.int32)
    ranks[0, SOURCE_NAMES.index("cold_bridge")] = 0
    tables.cooccurrence = sp.csr_matrix((N, N))
    tables.trending = tables.repeat_rate = np.zeros(N, np.float32)
    [row], _ = compute_features(np.array([8]), np.zeros(1, np.float32), ranking, tables,
                                index.vectors, ranks)
    assert "rank_cold_bridge" not in COLUMN and row[COLUMN["source_count"]] == 0
    assert all(row[COLUMN[name]] == 0 for name in INTERACTION_FEATURES)
    assert row[COLUMN["neighbour_likeness"]] > 0.9  # like 1, what item-kNN expects after 0
    assert row[COLUMN["bridge_likeness"]] > 0.9  # and 1 is among its nearest warm items


def test_the_explanation_names_the_bridge():
    from server.ranking.scorer import Evidence, reason, weight_vector

    row = np.zeros(len(COLUMN), np.float32)
    text = reason(row, weight_vector(None), query="", evidence=Evidence(), sources=["cold_bridge"])
    assert text == "new, like items bought by customers who bought yours"
