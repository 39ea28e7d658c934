"""Validation metrics and hard-negative mining on hand-made vectors with known answers."""

from __future__ import annotations

import math

import numpy as np

from train.negatives import mine_hard_negatives
from train.pairs import Pair
from train.validation import history_vectors, recall_and_ndcg, target_ranks


def _unit(*rows):
    m = np.asarray(rows, dtype=np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


ITEMS = _unit([1, 0, 0], [0.9, 0.1, 0], [0.8, 0.3, 0], [0, 1, 0], [0, 0, 1])


def test_target_ranks_leave_out_the_history_window():
    query = _unit([1, 0, 0])  # scores: item0 1.0 > item1 > item2 > item3 = item4 = 0
    assert target_ranks(query, ITEMS, [Pair(0, (4,), 1, 2, 0.0)]).tolist() == [2]
    # items 0 and 1 are in the window: they no longer outrank the target
    assert target_ranks(query, ITEMS, [Pair(0, (0, 1), 2, 2, 0.0)]).tolist() == [0]
    # ...but only the window counts, not the longer history kept for item-vector queries
    assert target_ranks(query, ITEMS, [Pair(0, (0, 1), 1, 2, 0.0)]).tolist() == [1]


def test_recall_and_ndcg_by_hand():
    recall, ndcg = recall_and_ndcg(np.array([0, 1, 2, 10]), k=2)
    assert recall == 0.5
    assert math.isclose(ndcg, (1.0 + 1.0 / math.log2(3)) / 4)
    assert recall_and_ndcg(np.array([], dtype=np.int64), k=10) == (0.0, 0.0)


def test_history_vectors_weigh_recent_items_more():
    pair = Pair(0, (3, 4), 1, 0, 0.0)  # newest item 3 ([0,1,0]), then item 4 ([0,0,1])
    vector = history_vectors([pair], ITEMS, half_life_events=1.0)[0]
    expected = np.array([0, 1, 0.5]) / np.linalg.norm([0, 1, 0.5])
    assert np.allclose(vector, expected, atol=1e-6)


def test_hard_negatives_come_from_the_band_after_skip():
    pool = np.ones(len(ITEMS), dtype=bool)
    query = _unit([1, 0, 0], [1, 0, 0])
    pairs = [Pair(0, (4,), 1, 0, 0.0), Pair(1, (1,), 1, 2, 0.0)]
    rng = np.random.default_rng(0)
    for _ in range(20):
        # pair 0: target 0 and window {4} out; by score 1, 2, 3 -> skip 1 leaves {2, 3}
        # pair 1: target 2 and window {1} out; by score 0, 3, 4 -> skip 1 leaves {3, 4}
        first, second = mine_hard_negatives(query, ITEMS, pairs, pool, skip=1, span=2, rng=rng)
        assert first in (2, 3) and second in (3, 4)


def test_hard_negatives_respect_the_pool():
    pool = np.array([True, False, False, True, True])  # items 1 and 2 listed after the split
    pair = Pair(0, (4,), 1, 0, 0.0)
    got = {mine_hard_negatives(_unit([1, 0, 0]), ITEMS, [pair], pool, skip=0, span=3,
                               rng=np.random.default_rng(s))[0] for s in range(20)}
    assert got == {3}  # 0 is the target, 4 is in the window, 1 and 2 are not in the pool
