"""Event ordering, the time split and pair construction on real files (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest

from export.item_text import item_text
from tests.train import synthetic
from train.batches import distinct_target_batches, length_grouped_batches
from train.data import EventSequences, load_events, load_items, load_training_data
from train.pairs import (QUERY_SEPARATOR, Pair, build_pairs, epoch_slice, query_text,
                         validation_cutoff)


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    return synthetic.write_shop(tmp_path_factory.mktemp("shop"))


@pytest.fixture(scope="module")
def data(shop):
    return load_training_data(*shop)


def _pairs(events, **kw):
    defaults = dict(history_items=5, per_user=50, seed=0, random_query_length=True)
    return build_pairs(events, **{**defaults, **kw})


def test_same_timestamp_order_is_seeded_not_file_order(tmp_path, shop):
    """Reversing the rows of every invoice in the file must not change any sequence."""
    catalog, _ = shop
    rows = synthetic.interactions()
    flipped = list(reversed(rows))  # every invoice's rows, and the users, in reverse
    items = load_items(catalog)
    a = load_events(synthetic.write_csv_gz(tmp_path / "a.csv.gz", rows), items, seed=7)
    b = load_events(synthetic.write_csv_gz(tmp_path / "b.csv.gz", flipped), items, seed=7)
    assert a.user_ids == b.user_ids
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.timestamps, b.timestamps)
    # ...and it really is a shuffle: another seed orders some invoice differently.
    c = load_events(synthetic.write_csv_gz(tmp_path / "c.csv.gz", rows), items, seed=8)
    assert np.array_equal(a.timestamps, c.timestamps)
    assert not np.array_equal(a.labels, c.labels)
    # Within a user, time never goes backwards.
    for u in range(len(a.user_ids)):
        assert np.all(np.diff(a.user_events(u)[1]) >= 0)


def test_training_pairs_never_see_the_future(data):
    events, items = data.events, data.items
    cutoff = validation_cutoff(events, 0.2)
    future_label = items.item_ids.index(synthetic.FUTURE_ITEM)
    train = _pairs(events, end=cutoff)
    val = _pairs(events, start=cutoff, random_query_length=False)
    assert len(train) > 100 and len(val) > 20
    for pair in train:
        assert pair.timestamp < cutoff
        labels, stamps = events.user_events(pair.user)
        bought_before_cutoff = set(labels[stamps < cutoff].tolist())
        assert set(pair.history) <= bought_before_cutoff
        assert pair.target in bought_before_cutoff
        assert future_label not in pair.history and pair.target != future_label
    assert all(pair.timestamp >= cutoff for pair in val)
    assert any(pair.target == future_label for pair in val)  # the future is validated on


def test_pairs_do_not_depend_on_events_outside_their_window(tmp_path, shop):
    """Rewriting everything after the cutoff leaves the training pairs exactly as they were."""
    catalog, interactions = shop
    items = load_items(catalog)
    original = load_events(interactions, items)
    cutoff = validation_cutoff(original, 0.2)
    rng = np.random.default_rng(1)
    rows = synthetic.interactions()
    ids = [it["item_id"] for it in synthetic.items()]
    changed = [dict(r, item_id=str(rng.choice(ids))) if r["timestamp"] >= _iso(cutoff) else r
               for r in rows]
    changed += [dict(rows[0], user_id="29999", timestamp="2011-12-30T10:00:00Z")] * 3
    altered = load_events(synthetic.write_csv_gz(tmp_path / "x.csv.gz", changed), items)
    assert [(p.history, p.target) for p in _pairs(original, end=cutoff)] == \
        [(p.history, p.target) for p in _pairs(altered, end=cutoff)]


def _iso(epoch: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_pair_history_is_distinct_newest_first_and_excludes_the_target(data):
    events = data.events
    for pair in _pairs(events, random_query_length=False)[:300]:
        labels, stamps = events.user_events(pair.user)
        assert len(set(pair.history)) == len(pair.history)
        assert pair.target not in pair.window
        assert pair.query_items == min(5, len(pair.history))
        # the newest history item is the event just before some event of this target
        positions = np.flatnonzero((labels == pair.target) & (stamps == pair.timestamp))
        assert any(i > 0 and labels[i - 1] == pair.history[0] for i in positions)


def test_random_query_lengths_cover_one_to_history_items(data):
    lengths = {p.query_items for p in _pairs(data.events)}
    assert lengths == {1, 2, 3, 4, 5}


def test_per_user_cap_and_query_text(data):
    pairs = _pairs(data.events, per_user=3)
    counts = np.bincount([p.user for p in pairs])
    assert counts.max() == 3
    texts = data.items.texts
    pair = Pair(0, (3, 2, 1), 2, 7, 0.0)
    assert query_text(pair, texts) == texts[3] + QUERY_SEPARATOR + texts[2]
    # the item side is the bundle's own template function, over title and attributes
    first = synthetic.items()[0]
    assert texts[0] == item_text(first["title"], "", {"price": first["price"],
                                                      "family": first["family"]})
    assert texts[0].startswith("RED CANDLE HOLDER | family: CANDLE HOLDER")


def test_epoch_slices_walk_the_pool_without_repeats():
    pool = [Pair(0, (1,), 1, i, 0.0) for i in range(10)]
    first, second, third = (epoch_slice(pool, e, 4) for e in range(3))
    assert [p.target for p in first + second] == list(range(8))
    assert [p.target for p in third] == [8, 9, 0, 1]
    assert epoch_slice(pool, 5, 0) == pool


def test_batches_never_hold_a_target_twice():
    targets = [1, 1, 1, 2, 3, 2, 4, 5, 1, 6]
    pairs = [Pair(0, (9,), 1, t, 0.0) for t in targets]
    batches = distinct_target_batches(pairs, 4)
    for batch in batches:
        assert len({p.target for p in batch}) == len(batch) <= 4
    # 1,2,3,4 | 1,2,5,6 | then only target 1 is left: those two have nothing to contrast with
    assert [sorted(p.target for p in b) for b in batches] == [[1, 2, 3, 4], [1, 2, 5, 6]]
    assert distinct_target_batches([Pair(0, (9,), 1, 1, 0.0)] * 3, 4) == []


def test_length_grouped_batches_pad_less_and_keep_every_pair_once():
    rng = np.random.default_rng(0)
    lengths = rng.choice([10, 60], size=256, p=[0.9, 0.1]).tolist()  # mostly single items
    pairs = [Pair(0, (9,), 1, target, 0.0) for target in range(256)]  # distinct targets
    grouped = length_grouped_batches(pairs, lengths, 8, seed=1, window_batches=8)
    assert sorted(p.target for b in grouped for p in b) == list(range(256))
    assert all(len(b) == 8 for b in grouped)
    def padded(batches):
        return sum(max(lengths[p.target] for p in b) * len(b) for b in batches)
    plain = distinct_target_batches(pairs, 8)
    assert padded(grouped) < 0.5 * padded(plain)
    assert grouped == length_grouped_batches(pairs, lengths, 8, seed=1, window_batches=8)  # seeded
    assert grouped != length_grouped_batches(pairs, lengths, 8, seed=2, window_batches=8)


def test_co_interaction_pairs_by_hand():
    from train.pairs import co_interaction_pairs

    labels = [[0, 1, 2], [0, 1], [5, 0, 9, 9, 9, 9, 9, 1], [3, 4]]
    events = EventSequences(
        [f"u{i}" for i in range(len(labels))],
        np.r_[0, np.cumsum([len(s) for s in labels])].astype(np.int64),
        np.concatenate([np.asarray(s, np.int64) for s in labels]),
        np.concatenate([np.arange(len(s), dtype=np.float64) for s in labels]))
    pairs = co_interaction_pairs(events, window=2, per_item=3, min_users=2, seed=0)
    # 0-1 are within 2 positions for two users (the third has them 7 apart): both directions.
    assert sorted((p.history, p.target) for p in pairs) == [((0,), 1), ((1,), 0)]
    assert all(p.user == -1 and p.query_items == 1 for p in pairs)
    assert co_interaction_pairs(events, window=2, per_item=3, min_users=3, seed=0) == []
    # Only events before `end` count: at end=1 nobody has bought two items yet.
    assert co_interaction_pairs(events, end=1.0, window=2, per_item=3, min_users=1, seed=0) == []


def test_item_pairs_join_the_training_pool_only(data):
    from train.config import TrainingConfig
    from train.finetune import make_pair_sets

    with_items = make_pair_sets(data, TrainingConfig())
    without = make_pair_sets(data, TrainingConfig(item_pairs_per_item=0))
    item_pairs = [p for p in with_items.train_pool if p.user < 0]
    assert item_pairs and len(with_items.train_pool) == len(without.train_pool) + len(item_pairs)
    assert abs(len(item_pairs) / len(with_items.train_pool) - 0.5) < 0.01  # item_pair_share
    assert all(p.timestamp < with_items.cutoff for p in item_pairs)
    assert with_items.validation == without.validation
