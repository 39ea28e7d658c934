"""LiveState over a real loaded bundle (real hnswlib, real SQLite-built catalog): how writes apply."""

from __future__ import annotations

import numpy as np
import pytest

from server.errors import InvalidRequest
from server.live.config import LiveConfig
from server.live.records import validate_events, validate_item_ids, validate_items
from server.live.replay import replay_sync
from server.live.wal import WriteAheadLog
from server.retrieval.filters import ItemFilter, allowed_mask
from tests.server.live_support import delete, fresh_live, interactions, item, knn_labels, state_of, upsert


@pytest.fixture
def live(small_bundle):
    return fresh_live(small_bundle)


def test_an_upserted_item_is_searchable_filterable_and_in_the_catalog(live):
    write = upsert(live, [item("NEW-1", colour="mauve")], seq=1)
    assert live.apply(write) == 1
    label = live.bundle.catalog.label_of["NEW-1"]
    assert label == live.bundle_count  # labels continue after the bundle's
    assert knn_labels(live, write.vectors[0])[0] == label
    mask = allowed_mask(ItemFilter({"colour": "mauve"}), live.bundle.postings, live.bundle.index.present)
    assert np.flatnonzero(mask).tolist() == [label]
    assert live.bundle.catalog.titles[label] == "title of NEW-1"
    assert live.bundle.tables.created_at[label] == pytest.approx(write.received_at)
    assert len(live.bundle.tables.popularity) > label  # feature tables grew with the catalog


def test_upserting_an_existing_item_replaces_its_vector_and_attributes(live):
    live.apply(upsert(live, [item("NEW-1", colour="mauve")], seed=1, seq=1))
    second = upsert(live, [item("NEW-1", colour="teal")], seed=2, seq=2)
    live.apply(second)
    label = live.bundle.catalog.label_of["NEW-1"]
    assert len(live.bundle.catalog) == live.bundle_count + 1  # same label, no duplicate
    np.testing.assert_allclose(live.bundle.index.vectors[label], second.vectors[0])
    postings, present = live.bundle.postings, live.bundle.index.present
    assert not allowed_mask(ItemFilter({"colour": "mauve"}), postings, present).any()
    assert allowed_mask(ItemFilter({"colour": "teal"}), postings, present)[label]


def test_a_deleted_item_is_gone_from_search_and_filters_and_can_come_back(live):
    bundle_item = live.bundle.catalog.item_ids[5]
    vector = live.bundle.index.vectors[5].copy()
    assert live.apply(delete([bundle_item], seq=1)) == 1
    assert 5 not in knn_labels(live, vector, k=50)
    assert not live.bundle.index.present[5]
    assert live.apply(delete([bundle_item], seq=2)) == 0  # deleting again changes nothing
    live.apply(upsert(live, [item(bundle_item)], seq=3))
    assert live.bundle.catalog.label_of[bundle_item] == 5 and live.bundle.index.present[5]


def test_interactions_update_history_popularity_and_cooccurrence(live):
    ids = live.bundle.catalog.item_ids
    before = live.bundle.tables.popularity[[10, 11]].copy()
    cooc_before = live.bundle.tables.cooccurrence[[10, 11]][:, [10, 11]].toarray()
    live.apply(interactions([("new-user", ids[10], "click"), ("new-user", ids[11], "purchase")], seq=1))
    history = live.bundle.users.get("new-user")
    assert history.labels.tolist() == [10, 11]
    assert (live.bundle.tables.popularity[[10, 11]] > before).all()
    assert live.counters.publish(force=True)
    gained = live.bundle.tables.cooccurrence[[10, 11]][:, [10, 11]].toarray() - cooc_before
    # 10 then 11: both directions count, the forward one more (capped at 1 when already strong)
    assert gained[0, 1] > 0 or cooc_before[0, 1] == 1.0
    assert 0 < gained[1, 0] <= gained[0, 1] or cooc_before[1, 0] == 1.0
    live.apply(interactions([("new-user", ids[12], "not_interested")], seq=2))
    assert live.bundle.users.get("new-user").disliked.tolist() == [12]


def test_replaying_a_write_twice_changes_nothing(live, small_bundle):
    writes = [upsert(live, [item("NEW-1", colour="mauve"), item("NEW-2")], seq=1), delete(["NEW-2"], seq=2),
              interactions([("u", "NEW-1", "click"), ("u", live.bundle.catalog.item_ids[3], "view")], seq=3)]
    for write in writes:
        live.apply(write)
    once = state_of(live)
    for write in writes:
        assert live.apply(write) == 0  # seq <= last applied: skipped
    assert state_of(live) == once


def test_replaying_the_log_twice_gives_the_same_state(small_bundle, tmp_path):
    live = fresh_live(small_bundle)
    wal = WriteAheadLog(tmp_path)
    ids = live.bundle.catalog.item_ids
    wal.append([upsert(live, [item("NEW-1"), item("NEW-2", colour="x")]), delete([ids[0], "NEW-1"]),
                interactions([("u", "NEW-2", "purchase"), ("u", ids[4], "click"), ("v", ids[4], "dislike")]),
                upsert(live, [item("NEW-1", colour="back")], seed=9)])
    first = fresh_live(small_bundle)
    assert replay_sync(first, wal, 0) == 4
    assert replay_sync(first, wal, 0) == 0  # again: nothing new
    second = fresh_live(small_bundle)
    replay_sync(second, wal, 0)
    assert state_of(first) == state_of(second)
    assert first.is_live("NEW-1") and not first.is_live(ids[0]) and first.last_applied == 4


def test_checks_name_unknown_and_deleted_items_and_see_earlier_writes_of_the_group(live):
    ids = live.bundle.catalog.item_ids
    live.apply(delete([ids[1]], seq=1))
    pending: dict[str, bool] = {}
    with pytest.raises(InvalidRequest, match=r"events\[1\].*unknown or deleted.*events\[2\]"):
        live.check(interactions([("u", ids[0], "view"), ("u", "NOPE", "view"), ("u", ids[1], "view")]), pending)
    with pytest.raises(InvalidRequest, match=r"item_ids\[0\] \('NOPE'\): unknown item"):
        live.check(delete(["NOPE"]), pending)
    live.check(upsert(live, [item("LATER")]), pending)  # not applied yet, but earlier in the group
    live.check(interactions([("u", "LATER", "click")]), pending)
    live.check(delete([ids[2]]), pending)
    with pytest.raises(InvalidRequest, match="unknown or deleted"):
        live.check(interactions([("u", ids[2], "click")]), pending)


def test_requests_are_refused_whole_naming_every_bad_entry():
    config = LiveConfig(max_items_per_write=3)
    from server.live.records import Event, ItemWrite

    with pytest.raises(InvalidRequest, match=r"items\[1\]: empty item_id.*items\[2\] \('a'\): item_id repeated"
                                             r".*items\[2\] \('a'\): empty title and text"):
        validate_items([ItemWrite("a", "t"), ItemWrite("", "t"), ItemWrite("a", " ", "")], config)
    with pytest.raises(InvalidRequest, match="at most 3"):
        validate_items([ItemWrite(str(i), "t") for i in range(4)], config)
    with pytest.raises(InvalidRequest, match="at least one"):
        validate_item_ids([], config)
    with pytest.raises(InvalidRequest, match=r"events\[0\].*unknown event 'love'.*events\[1\].*weight"):
        validate_events([Event("u", "i", "love", 1.0, 1.0), Event("u", "i", "view", -1.0, 1.0)], config)
    assert validate_item_ids(["a", "a", "b"], config) == ("a", "b")
