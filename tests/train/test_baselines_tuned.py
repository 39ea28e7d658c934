"""item-kNN and tuned ALS: known neighbours come back, tuning never sees the test targets."""

from __future__ import annotations

import numpy as np

from train.data import EventSequences
from train.evaluation.baselines import ItemKNNRecommender, item_cosine
from train.evaluation.protocol import leave_last_out
from train.evaluation.tuning import tuned_item_knn, validation_split


def _events(sequences: list[list[int]]) -> EventSequences:
    labels = np.concatenate([np.asarray(s, np.int64) for s in sequences])
    starts = np.r_[0, np.cumsum([len(s) for s in sequences])].astype(np.int64)
    stamps = np.concatenate([np.arange(len(s), dtype=np.float64) for s in sequences])
    return EventSequences([f"u{i:03d}" for i in range(len(sequences))], starts, labels, stamps)


def _shop(n_users: int = 120, seed: int = 0) -> EventSequences:
    """Items 0-9 bought together, items 10-19 bought together; users keep to one group."""
    rng = np.random.default_rng(seed)
    return _events([list(rng.choice(10, size=6) + 10 * (u % 2)) for u in range(n_users)])


def test_item_cosine_by_hand():
    events = _events([[0, 1], [0, 1], [0, 2], [3]])
    similarity = item_cosine(events, np.ones(len(events.labels), bool), 4).toarray()
    # items 0 (3 users) and 1 (2 users) share 2 users: 2 / sqrt(3 * 2)
    assert np.isclose(similarity[0, 1], 2 / np.sqrt(6))
    assert np.isclose(similarity[0, 2], 1 / np.sqrt(3))
    assert similarity[0, 3] == 0 and np.all(np.diag(similarity) == 0)


def test_item_knn_recommends_the_co_bought_group():
    events = _shop()
    knn = ItemKNNRecommender(events, np.ones(len(events.labels), bool), 20)
    assert set(knn.recommend(np.asarray([12, 15]), 8).tolist()) <= set(range(10, 20))
    assert set(knn.recommend(np.asarray([3]), 8).tolist()) <= set(range(10))
    # Recency: the newest history item's group comes first.
    assert knn.with_params(half_life=1.0).recommend(np.asarray([3, 4, 5, 17]), 1)[0] >= 10


def test_validation_split_holds_out_only_training_events():
    events = _shop()
    cases = leave_last_out(events)
    fit, histories, targets = validation_split(events, cases.training_events)
    assert not (fit & ~cases.training_events).any()  # the test events stay out
    assert int((cases.training_events & ~fit).sum()) == len(targets) == len(events.user_ids)
    assert all(len(h) == 4 for h in histories)  # 6 events: 1 test, 1 validation, 4 history


def test_tuned_item_knn_records_its_grid():
    events = _shop()
    cases = leave_last_out(events)
    knn = tuned_item_knn(events, cases.training_events, 20)
    assert len(knn.tuning.grid) == 6 and "tuned" in knn.name
    assert all(0 <= row["validation_ndcg@10"] <= 1 for row in knn.tuning.grid)
