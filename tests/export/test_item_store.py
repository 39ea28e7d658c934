import math
import shutil
import sqlite3

import numpy as np
import pytest

from export.errors import BundleError, InvalidInput
from export.item_store import SCHEMA_VERSION, ItemRecord, ItemStore

RECORDS = [
    ItemRecord("A1", "Red mug", "big", {"brand": "Acme", "colour": "red"}, 1293937445.0),
    ItemRecord("B2", "Tasse bleue ☕", "", {}, None),
    ItemRecord("C3", "Green bowl"),
]


def test_labels_are_assigned_in_order_and_catalog_is_label_indexed(tmp_path):
    store = ItemStore.create(tmp_path / "items.sqlite")
    assert store.add_items(RECORDS) == [0, 1, 2]
    assert store.add_items([ItemRecord("D4", "Fork")]) == [3]
    catalog = store.catalog()
    assert len(catalog) == 4 and len(store) == 4
    assert catalog.item_ids == ["A1", "B2", "C3", "D4"]
    assert catalog.titles[1] == "Tasse bleue ☕"
    assert catalog.attributes[0] == {"brand": "Acme", "colour": "red"}
    assert catalog.created_at.dtype == np.float64
    assert catalog.created_at[0] == 1293937445.0 and math.isnan(catalog.created_at[1])
    assert catalog.deleted.dtype == bool and not catalog.deleted.any()
    assert catalog.label_of == {"A1": 0, "B2": 1, "C3": 2, "D4": 3}
    assert [t[:3] for t in store.texts()][:2] == [(0, "Red mug", "big"), (1, "Tasse bleue ☕", "")]
    store.close()


def test_schema_is_ready_for_live_writes(tmp_path):
    path = tmp_path / "items.sqlite"
    ItemStore.create(path).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    columns = {r[1] for r in db.execute("PRAGMA table_info(items)")}
    assert columns == {"label", "item_id", "title", "text", "attributes", "created_at",
                       "updated_at", "deleted", "version"}
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"items", "meta"}  # live writes are logged by server/live/wal.py, not here
    meta = dict(db.execute("SELECT key, value FROM meta"))
    assert meta["schema_version"] == str(SCHEMA_VERSION)


def test_duplicate_ids_are_refused(tmp_path):
    store = ItemStore.create(tmp_path / "items.sqlite")
    store.add_items(RECORDS)
    with pytest.raises(InvalidInput, match="duplicate"):
        store.add_items([ItemRecord("A1", "again")])
    assert len(store) == 3  # the failed batch left nothing behind
    with pytest.raises(InvalidInput, match="already exists"):
        ItemStore.create(tmp_path / "items.sqlite")
    store.close()


def test_closed_file_is_complete_and_readonly_open_leaves_no_side_files(tmp_path):
    path = tmp_path / "items.sqlite"
    store = ItemStore.create(path)
    store.add_items(RECORDS)
    store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["items.sqlite"]  # WAL checkpointed
    copy = tmp_path / "copy" / "items.sqlite"
    copy.parent.mkdir()
    shutil.copy(path, copy)  # the file alone (what a bundle carries) holds everything
    before = copy.read_bytes()
    with ItemStore.open(copy, readonly=True) as readonly:
        assert readonly.catalog().item_ids == ["A1", "B2", "C3"]
        with pytest.raises(sqlite3.OperationalError):
            readonly.add_items([ItemRecord("Z", "z")])
    assert sorted(p.name for p in copy.parent.iterdir()) == ["items.sqlite"]
    assert copy.read_bytes() == before


def test_open_refuses_non_stores(tmp_path):
    with pytest.raises(BundleError, match="no item store"):
        ItemStore.open(tmp_path / "missing.sqlite")
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(BundleError, match="not an item store"):
        ItemStore.open(tmp_path / "junk.sqlite", readonly=True)
