"""LiveOverlay over a real loaded bundle: live writes change the overlay and nothing else."""

from __future__ import annotations

import dataclasses

import numpy as np

from server.live.overlay import LiveOverlay, ServedCatalog
from server.live.records import Event
from server.served_bundle import ServedBundle
from tests.server.live_support import delete, fresh_live, interactions, item, state_of, upsert


def test_writes_change_the_overlay_and_leave_the_bundle_as_loaded(small_bundle):
    live = fresh_live(small_bundle)
    bundle = live.bundle
    immutable = {f.name: id(getattr(bundle, f.name)) for f in dataclasses.fields(bundle) if f.name != "overlay"}
    untouched = state_of(fresh_live(small_bundle))
    ids = bundle.catalog.item_ids
    for seq, write in enumerate([upsert(live, [item("NEW-1", colour="mauve")]), delete([ids[2]]),
                                 interactions([("u", "NEW-1", "purchase"), ("u", ids[5], "click")])],
                                start=1):
        write.seq = seq
        live.apply(write)
    assert state_of(live) != untouched
    # the same objects, never replaced: what live writes change is the overlay's alone
    assert {f.name: id(getattr(bundle, f.name)) for f in dataclasses.fields(bundle)
            if f.name != "overlay"} == immutable
    assert bundle.overlay is live.overlay
    # the bundle's files are as built: they load (checksums verified) into the same start state
    assert state_of(fresh_live(small_bundle)) == untouched


def test_a_deleted_item_stays_in_the_catalog_and_only_index_present_says_so(small_bundle):
    live = fresh_live(small_bundle)
    victim = live.bundle.catalog.item_ids[3]
    label = live.bundle.catalog.label_of[victim]
    assert not hasattr(live.overlay.catalog, "deleted") and not hasattr(live.overlay.catalog, "created_at")
    assert live.apply(delete([victim], seq=1)) == 1
    assert live.overlay.catalog.item_ids[label] == victim  # labels stay stable
    assert not live.overlay.index.present[label] and not live.overlay.is_live(victim)
    # an event on it changes nothing
    before = state_of(live)
    assert not live.overlay.record(Event("u", victim, "purchase", 1.0, 0.0))
    assert state_of(live) == before


def test_an_upserted_items_age_is_kept_once_in_the_tables(small_bundle):
    live = fresh_live(small_bundle)
    write = upsert(live, [item("NEW-1")], seq=1)
    live.apply(write)
    label = live.overlay.catalog.label_of["NEW-1"]
    assert live.overlay.tables.created_at[label] == write.received_at
    assert live.items["NEW-1"].created_at == write.received_at  # the snapshot's record, read from there


def test_a_training_view_gets_its_own_tables_over_the_same_items(small_bundle):
    bundle = ServedBundle.load(small_bundle)
    tables = dataclasses.replace(bundle.tables, popularity=np.zeros_like(bundle.tables.popularity))
    view = bundle.overlay.with_tables(tables, bundle.users)
    assert isinstance(view, LiveOverlay) and isinstance(view.catalog, ServedCatalog)
    assert view.catalog is bundle.catalog and view.tables is tables
    assert bundle.tables.popularity.any()  # the served overlay keeps its own tables
