"""Ranking features, the linear scorer, MMR and explanations on hand-made tables."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from server.ranking.features import COLUMN, FEATURES, FeatureTables, RankingContext, compute_features
from server.ranking.scorer import Evidence, contributions, reason, select, weight_vector


def unit(*rows):
    v = np.asarray(rows, dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


VECTORS = unit([1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0.9, 0.1], [0, 0, 1])
COOC = sp.csr_matrix(np.array([
    [0, 0, 0, 0, 1.0],
    [0, 0, 0, 0, 0],
    [0, 0, 0, 0.5, 0],
    [0, 0, 0, 0, 0],
    [1.0, 0, 0, 0, 0],
], dtype=np.float32))


def tables():
    return FeatureTables(
        popularity=np.array([1.0, 0.5, 0.2, 0.1, 0.0], np.float32),
        cooccurrence=COOC,
        created_at=np.array([0, 0, 0, 0, np.nan]),
        attribute_codes={"colour": np.array([0, 0, 1, 1, -1], np.int32)},
        freshness_half_life_days=30,
    )


def test_features_reflect_history_cooccurrence_and_penalties():
    ctx = RankingContext(query_vector=None, history_labels=np.array([0]),
                         history_weights=np.array([1.0], np.float32),
                         disliked_labels=np.array([2]), now=0.0)
    candidates = np.array([0, 1, 3, 4])
    f, sims = compute_features(candidates, np.zeros(4, np.float32), ctx, tables(), VECTORS)
    assert f[1, COLUMN["history_max_similarity"]] > 0.99  # item 1 is close to item 0
    assert f[3, COLUMN["co_occurrence"]] == 1.0  # item 4 co-occurs with item 0
    assert f[0, COLUMN["already_interacted"]] == 1.0 and f[1, COLUMN["already_interacted"]] == 0
    assert f[2, COLUMN["disliked_similarity"]] > 0.9  # item 3 is like disliked item 2
    assert f[1, COLUMN["attribute_affinity"]] == 1.0 and f[2, COLUMN["attribute_affinity"]] == 0
    assert f[0, COLUMN["freshness"]] == 1.0 and f[3, COLUMN["freshness"]] == 0.0  # unknown age
    assert sims.shape == (4, 1)


def test_mmr_trades_relevance_for_diversity():
    scores = np.array([1.0, 0.99, 0.5, 0.49, 0.3], np.float32)
    assert select(scores, VECTORS, 2, diversity=0.0).tolist() == [0, 1]
    diverse = select(scores, VECTORS, 2, diversity=0.7).tolist()
    assert diverse[0] == 0 and diverse[1] in (2, 3, 4)


def test_reason_names_the_history_item_behind_cooccurrence():
    w = weight_vector(None)
    row = np.zeros(len(w), np.float32)
    row[COLUMN["co_occurrence"]] = 1.0
    row[COLUMN["popularity"]] = 0.1
    text = reason(row, w, query="", evidence=Evidence(bought_with="WHITE METAL LANTERN",
                                                        similar_to="WHITE METAL LANTERN"))
    assert text == "often bought with WHITE METAL LANTERN"
    top = contributions(row, w)
    assert top[0].feature == "co_occurrence" and top[0].contribution == w[COLUMN["co_occurrence"]]


def test_reason_for_a_text_query():
    w = weight_vector(None)
    row = np.zeros(len(w), np.float32)
    row[COLUMN["query_similarity"]] = 0.8
    row[COLUMN["retrieval"]] = 0.8
    assert reason(row, w, query="red lantern", evidence=Evidence()) \
        == "matches your search \u201cred lantern\u201d"


def test_collaborative_source_and_repeat_features():
    from export.neighbours import NeighbourTable

    knn = NeighbourTable(np.array([[4, 1], [-1, -1], [-1, -1], [-1, -1], [0, -1]], np.int32),
                         np.array([[0.8, 0.2], [0, 0], [0, 0], [0, 0], [0.8, 0]], np.float16))
    after = NeighbourTable(np.array([[3, -1], [2, -1], [-1, -1], [-1, -1], [-1, -1]], np.int32),
                           np.array([[1.0, 0], [0.5, 0], [0, 0], [0, 0], [0, 0]], np.float16))
    t = tables()
    t.item_knn, t.transitions = knn, after
    t.repeat_rate = np.array([0.5, 0, 0, 0, 0], np.float32)
    t.trending = np.array([0, 0, 0, 1.0, 0], np.float32)
    ctx = RankingContext(query_vector=None, history_labels=np.array([1, 0]),
                         history_weights=np.array([0.25, 0.75], np.float32), now=0.0)
    candidates = np.array([0, 3, 4, 9])  # 9: an item added live, past every table
    # columns: content, item_knn, transitions, popular, trending, repeat, cold_bridge
    ranks = np.array([[0, -1, -1, -1, -1, 0, -1], [1, -1, 0, -1, 0, -1, -1],
                      [-1, 0, -1, -1, -1, -1, 0], [2, -1, -1, -1, -1, -1, -1]])
    f, _ = compute_features(candidates, np.zeros(4, np.float32), ctx, t,
                            np.vstack([VECTORS, np.eye(5, 3, dtype=np.float32)]), ranks)
    assert f[2, COLUMN["item_knn"]] == pytest.approx(0.75 * 0.8, abs=1e-3)  # float16 scores
    assert f[1, COLUMN["transition"]] == 1.0  # 3 follows 0, the newest item (weight 1)
    assert f[0, COLUMN["repeat_purchase"]] == 0.5 and f[1, COLUMN["repeat_purchase"]] == 0
    assert f[1, COLUMN["trending"]] == 1.0 and f[3].any()  # the live item still gets a row
    assert f[1, COLUMN["rank_content"]] == 0.5 and f[1, COLUMN["rank_trending"]] == 1.0
    assert f[2, COLUMN["rank_content"]] == 0 and f[1, COLUMN["source_count"]] == 3
    assert f[2, COLUMN["source_count"]] == 1  # the cold bridge has no rank feature of its own
    assert f[0, COLUMN["rank_repeat"]] == 1.0 and f[0, COLUMN["source_count"]] == 2


def test_history_repeat_features():
    t = tables()
    history = np.array([2, 0, 2, 1, 2])  # oldest..newest: 2 three times, newest at the end
    ctx = RankingContext(query_vector=None, history_labels=history,
                         history_weights=np.full(5, 0.2, np.float32), now=0.0)
    f, _ = compute_features(np.array([2, 0, 3]), np.zeros(3, np.float32), ctx, t, VECTORS)
    assert f[:, COLUMN["history_count"]].tolist() == pytest.approx([0.6, 0.2, 0.0])
    assert f[:, COLUMN["history_recency"]].tolist() == pytest.approx([1.0, 1 / 4, 0.0])
    assert f[:, COLUMN["user_repeat_share"]].tolist() == pytest.approx([0.5] * 3)  # 2 of 4 later events repeat
    assert f[:, COLUMN["history_size"]].tolist() == pytest.approx([np.log1p(5)] * 3)


def test_neighbour_likeness_is_content_likeness_to_what_item_knn_expects():
    # item-kNN expects item 2 (score 1.0) and item 0 (0.5) after the history [4]
    ctx = RankingContext(query_vector=None, history_labels=np.array([4]),
                         history_weights=np.ones(1, np.float32), now=0.0,
                         neighbour_scores={"item_knn": (np.array([0, 2]), np.array([0.5, 1.0], np.float32))})
    f, _ = compute_features(np.array([3, 1, 2, 4]), np.zeros(4, np.float32), ctx, tables(), VECTORS)
    likeness = f[:, COLUMN["neighbour_likeness"]]
    assert likeness[0] == pytest.approx(float(VECTORS[3] @ VECTORS[2]), abs=1e-5)  # nobody bought 3: like 2
    assert likeness[1] == pytest.approx(float(VECTORS[1] @ VECTORS[0]) * 0.5, abs=1e-5)  # like 0, half as expected
    assert likeness[2] == pytest.approx(0.0, abs=1e-6)  # 2 itself: only 0 is left, and they are orthogonal
    assert likeness[3] == 0.0


def test_contributions_name_item_features_not_the_users():
    row = np.zeros(len(FEATURES), np.float32)
    row[COLUMN["history_size"]], row[COLUMN["user_repeat_share"]] = 3.0, 0.9  # large, per user
    row[COLUMN["item_knn"]], row[COLUMN["popularity"]] = 0.5, 0.2
    weights = np.ones(len(FEATURES), np.float32)
    named = [c.feature for c in contributions(row, weights)]
    assert named == ["item_knn", "popularity"]
