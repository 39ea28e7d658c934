import json
import random

import numpy as np
import pytest

from export.catalog import Interaction
from export.features import InteractionFeatures, compute_features
from export.item_store import Catalog

DAY = 86400.0
T0 = 1_300_000_000.0


def make_catalog(n, attributes=None):
    ids = [f"i{k}" for k in range(n)]
    return Catalog(ids, ids, attributes or [{} for _ in ids], np.full(n, np.nan),
                   np.zeros(n, bool), {item: k for k, item in enumerate(ids)})


def test_popularity_counts_and_time_decay():
    catalog = make_catalog(3)
    events = [
        Interaction("u1", "i0", T0 + 30 * DAY),           # at the reference time: weight 1
        Interaction("u2", "i1", T0),                      # one half-life (30 days) earlier: 0.5
        Interaction("u3", "i1", T0),
        Interaction("u3", "i1", T0, event="view"),        # a view: not a purchase, weight 0.1
        Interaction("u4", "nope", T0),                    # unknown item: skipped
    ]
    features = compute_features(events, catalog, half_life_days=30.0)
    assert features.reference_time == T0 + 30 * DAY
    assert features.popularity_count.tolist() == [1, 2, 0]
    assert features.popularity.dtype == np.float32
    # raw decayed: i0 = 1, i1 = 0.5 + 0.5 + 0.05 = 1.05 -> normalised to max 1
    np.testing.assert_allclose(features.popularity, [1 / 1.05, 1.0, 0.0], rtol=1e-6)
    assert features.counts["skipped_unknown_items"] == 1
    assert features.counts["interactions"] == 4 and features.counts["users"] == 3


def test_cooccurrence_weights_top_n_and_row_normalisation():
    catalog = make_catalog(5)
    # one user buys i0, i1, i2 in that order (distinct times)
    events = [Interaction("u", f"i{k}", T0 + k) for k in range(3)]
    features = compute_features(events, catalog, window=5, backward_weight=0.5, top_n=50)
    dense = features.cooccurrence.toarray()
    # forward: i0->i1 1, i0->i2 1/2, i1->i2 1; backward at half weight: i1->i0 .5, i2->i0 .25, i2->i1 .5
    raw = np.array([[0, 1, .5], [.5, 0, 1], [.25, .5, 0]])
    np.testing.assert_allclose(dense[:3, :3], raw / raw.max(axis=1, keepdims=True), rtol=1e-6)
    assert features.cooccurrence.dtype == np.float32 and dense[3:].sum() == 0
    trimmed = compute_features(events, catalog, top_n=1)
    assert np.diff(trimmed.cooccurrence.indptr).max() == 1
    assert trimmed.cooccurrence.toarray()[0].tolist() == [0, 1, 0, 0, 0]


def test_window_limits_the_distance_and_self_pairs_are_ignored():
    catalog = make_catalog(4)
    events = [Interaction("u", item, T0 + k) for k, item in enumerate(["i0", "i0", "i1", "i2", "i3"])]
    dense = compute_features(events, catalog, window=1, backward_weight=0).cooccurrence.toarray()
    assert dense[0, 0] == 0 and dense[0, 1] == 1 and dense[0, 2] == 0 and dense[2, 3] == 1


def invoice_events():
    """Users with several items per invoice (shared timestamps) over several invoices."""
    rng = random.Random(1)
    events = []
    for user in range(30):
        for invoice in range(4):
            when = T0 + invoice * DAY + user
            for item in rng.sample(range(40), 6):
                events.append(Interaction(f"user{user}", f"i{item}", when))
    return events


def assert_same(a, b):
    np.testing.assert_array_equal(a.popularity, b.popularity)
    np.testing.assert_array_equal(a.popularity_count, b.popularity_count)
    assert (a.cooccurrence != b.cooccurrence).nnz == 0
    assert a.user_history.keys() == b.user_history.keys()
    for user in a.user_history:
        np.testing.assert_array_equal(a.user_history[user], b.user_history[user])
        np.testing.assert_array_equal(a.user_history_ts[user], b.user_history_ts[user])


def test_same_timestamp_order_is_seeded_never_file_order():
    catalog = make_catalog(40)
    events = invoice_events()
    base = compute_features(events, catalog, seed=0)
    shuffled = events[:]
    random.Random(7).shuffle(shuffled)
    assert_same(base, compute_features(shuffled, catalog, seed=0))
    assert_same(base, compute_features(list(reversed(events)), catalog, seed=0))
    other = compute_features(events, catalog, seed=1)
    assert any(not np.array_equal(base.user_history[u], other.user_history[u])
               for u in base.user_history)
    # ties are broken, not kept in file order: the first invoice's items are not file order
    first_invoice = [int(e.item_id[1:]) for e in events[:6]]
    assert base.user_history["user0"][:6].tolist() != first_invoice
    assert sorted(base.user_history["user0"][:6].tolist()) == sorted(first_invoice)


def test_user_history_is_most_recent_last_and_truncated():
    catalog = make_catalog(10)
    events = [Interaction("u", f"i{k}", T0 + k * DAY) for k in range(10)]
    events.append(Interaction("v", "i3", T0))
    features = compute_features(reversed(events), catalog, history_length=4)
    assert features.user_history["u"].tolist() == [6, 7, 8, 9]
    assert features.user_history["u"].dtype == np.int64
    np.testing.assert_array_equal(features.user_history_ts["u"], T0 + np.arange(6, 10) * DAY)
    assert features.user_history["v"].tolist() == [3]


def test_attribute_vocabulary_keeps_categorical_attributes_only():
    attributes = [{"colour": c, "price": p, "sku": f"s{k}"}
                  for k, (c, p) in enumerate([("red", "1.5"), ("blue", "2"), ("red", "3")])]
    features = compute_features([], make_catalog(3, attributes))
    from export.features import attribute_vocabulary

    assert features.attribute_vocab == {"colour": ["red", "blue"], "sku": ["s0", "s1", "s2"]}
    assert attribute_vocabulary(make_catalog(3, attributes), max_values=2) == {"colour": ["red", "blue"]}


def test_save_and_load_round_trip_without_pickle(tmp_path):
    catalog = make_catalog(40, [{"colour": "red"} for _ in range(40)])
    features = compute_features(invoice_events() + [Interaction("ünï", "i1", T0)], catalog)
    section = features.save(tmp_path / "features")
    names = sorted(p.name for p in (tmp_path / "features").iterdir())
    assert names == sorted(section["files"])
    assert not any(name.endswith((".pkl", ".pickle")) for name in names)
    loaded = InteractionFeatures.load(tmp_path / "features")  # np.load(allow_pickle=False)
    assert_same(features, loaded)
    assert loaded.attribute_vocab == {"colour": ["red"]}
    assert loaded.reference_time == features.reference_time and loaded.half_life_days == 30.0
    assert loaded.user_history["ünï"].tolist() == [1]
    assert section["parameters"]["top_n"] == 50 and section["counts"]["users"] == 31
    json.dumps(section)  # goes into the manifest


def test_no_interactions_gives_empty_tables_that_round_trip(tmp_path):
    catalog = make_catalog(3)
    features = compute_features([], catalog)
    assert features.popularity.tolist() == [0, 0, 0] and features.cooccurrence.nnz == 0
    assert features.cooccurrence.shape == (3, 3) and features.user_history == {}
    features.save(tmp_path)
    loaded = InteractionFeatures.load(tmp_path)
    assert loaded.user_history == {} and loaded.popularity_count.tolist() == [0, 0, 0]


def test_load_refuses_missing_tables(tmp_path):
    from export.errors import BundleError

    compute_features([], make_catalog(2)).save(tmp_path)
    (tmp_path / "popularity.npy").unlink()
    with pytest.raises(BundleError, match="unreadable feature tables"):
        InteractionFeatures.load(tmp_path)


def test_item_knn_is_cosine_over_users_and_transitions_are_shares_of_what_follows(tmp_path):
    catalog = make_catalog(4)
    day = lambda d: T0 + d * DAY  # noqa: E731
    events = [Interaction("a", "i0", day(0)), Interaction("a", "i1", day(1)),
              Interaction("b", "i0", day(0)), Interaction("b", "i1", day(1)),
              Interaction("c", "i0", day(0)), Interaction("c", "i2", day(1)),
              Interaction("c", "i0", day(5)),  # c comes back to i0: a repeat
              Interaction("d", "i3", day(9), event="dislike")]  # no taste signal
    features = compute_features(events, catalog, neighbours=3, window=1)
    knn = dict(zip(features.item_knn.labels[0].tolist(), features.item_knn.scores[0].tolist()))
    # i0: users {a, b, c}; i1: {a, b}; i2: {c}
    assert knn[1] == pytest.approx(2 / np.sqrt(3 * 2), abs=1e-3)
    assert knn[2] == pytest.approx(1 / np.sqrt(3 * 1), abs=1e-3)
    assert -1 in knn and 0 not in knn  # an empty slot; never its own neighbour
    after = dict(zip(features.transitions.labels[0].tolist(), features.transitions.scores[0].tolist()))
    assert after[1] == pytest.approx(2 / 3, abs=1e-3) and after[2] == pytest.approx(1 / 3, abs=1e-3)
    assert features.transitions.labels[2].tolist() == [0, -1, -1]  # c: i2 then i0 again
    assert features.repeat_rate.tolist() == pytest.approx([1 / 3, 0, 0, 0])
    assert features.trending.max() == 1.0 and features.popularity[3] == 0  # the dislike counts for nothing
    assert features.item_knn.labels.dtype == np.int32 and features.item_knn.scores.dtype == np.float16
    assert features.counts["neighbour_bytes_per_item"] == 2 * 3 * 6  # 6 bytes a neighbour, two tables
    features.save(tmp_path)
    loaded = InteractionFeatures.load(tmp_path)
    np.testing.assert_array_equal(loaded.item_knn.labels, features.item_knn.labels)
    np.testing.assert_array_equal(loaded.transitions.scores, features.transitions.scores)
    np.testing.assert_array_equal(loaded.repeat_rate, features.repeat_rate)


def test_item_knn_counts_only_each_users_recent_items():
    catalog = make_catalog(4)
    events = [Interaction("a", f"i{k}", T0 + k) for k in range(4)]
    recent_two = compute_features(events, catalog, knn_recent_items=2).item_knn
    assert set(recent_two.labels[3].tolist()) == {2, -1}  # i0, i1 are too old for a
    assert (recent_two.labels[0] == -1).all()
