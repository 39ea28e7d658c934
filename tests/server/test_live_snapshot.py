"""Snapshots: atomic, checksummed, bundle-bound; restore + replay equals the state before a crash."""

from __future__ import annotations

import numpy as np

from server.live import snapshot
from server.live.replay import replay_sync
from server.live.wal import WriteAheadLog
from tests.server.live_support import delete, fresh_live, interactions, item, state_of, upsert


def take(live, directory, keep: int = 2):
    folder = snapshot.start_draft(directory, live.last_applied)
    snapshot.save_index(live, folder / "index.hnsw")
    return snapshot.persist(snapshot.capture(live, folder), keep)


def _history(live, wal):
    ids = live.bundle.catalog.item_ids
    return [
        upsert(live, [item("NEW-1", colour="mauve"), item("NEW-2"), item("NEW-3")], seed=1),
        delete([ids[0], "NEW-2"]),
        interactions([("u", "NEW-1", "purchase"), ("u", ids[7], "click"), ("w", ids[7], "dislike")]),
        upsert(live, [item("NEW-2", colour="back")], seed=2),
        interactions([("u", "NEW-3", "view"), ("x", "NEW-2", "click")]),
    ]


def test_restore_then_replay_equals_the_state_before_the_crash(small_bundle, tmp_path):
    wal = WriteAheadLog(tmp_path)
    before = fresh_live(small_bundle)
    writes = _history(before, wal)
    wal.append(writes[:3])
    replay_sync(before, wal, 0)
    path = take(before, tmp_path)  # snapshot after seq 3 ...
    wal.append(writes[3:])  # ... then two more writes are logged before the "crash"
    replay_sync(before, wal, 0)

    recovered = fresh_live(small_bundle)
    found = snapshot.newest_valid(tmp_path, recovered.version, recovered.fingerprint)
    assert found is not None and found[0] == path and found[1]["seq"] == 3
    snapshot.restore(recovered, *found)
    assert replay_sync(recovered, wal, found[1]["seq"]) == 2
    assert state_of(recovered) == state_of(before)
    # the restored index really is the snapshot's: NEW-1 is searchable, deleted ids are not
    label = recovered.bundle.catalog.label_of["NEW-1"]
    found_labels = recovered.bundle.index.knn(recovered.bundle.index.vectors[label][None], 5)[0][0]
    assert found_labels[0] == label and 0 not in found_labels
    # live interactions before the snapshot moved the neighbour tables (state_of compares
    # them, pending pairs included): the snapshot kept those moves
    pristine = fresh_live(small_bundle).bundle.tables.item_knn
    restored = snapshot.NeighbourTable.load(path, "item_knn")
    assert (restored.scores != pristine.scores).any() or recovered.bundle.tables.item_knn.pending


def test_a_corrupt_or_foreign_snapshot_is_skipped_for_an_older_valid_one(small_bundle, tmp_path):
    wal = WriteAheadLog(tmp_path)
    live = fresh_live(small_bundle)
    writes = _history(live, wal)
    wal.append(writes)
    for write in writes[:2]:
        live.apply(write)
    older = take(live, tmp_path, keep=3)
    live.apply(writes[2])
    newer = take(live, tmp_path, keep=3)
    with open(newer / "vectors.npy", "r+b") as fh:  # bit rot in the newest snapshot
        fh.seek(-4, 2)
        fh.write(b"\xff\xff\xff\xff")
    found = snapshot.newest_valid(tmp_path, live.version, live.fingerprint)
    assert found is not None and found[0] == older
    assert snapshot.newest_valid(tmp_path, "another-bundle-version", live.fingerprint) is None
    assert snapshot.newest_valid(tmp_path, live.version, "another-encoder") is None


def test_a_crash_mid_snapshot_leaves_no_snapshot_and_is_cleaned_up(small_bundle, tmp_path):
    live = fresh_live(small_bundle)
    live.apply(upsert(live, [item("NEW-1")], seq=1))
    folder = snapshot.start_draft(tmp_path, live.last_applied)
    snapshot.save_index(live, folder / "index.hnsw")  # ... and the process dies here
    folder.rename(tmp_path / ".snapshot-1.tmp-999999")  # as another (dead) process left it
    assert snapshot.newest_valid(tmp_path, live.version, live.fingerprint) is None
    take(live, tmp_path)
    assert not list(tmp_path.glob(".snapshot-*"))  # pruned with the next snapshot
    assert [seq for seq, _ in snapshot.snapshots(tmp_path)] == [1]


def test_only_the_newest_snapshots_are_kept(small_bundle, tmp_path):
    live = fresh_live(small_bundle)
    for seq in range(1, 5):
        live.apply(upsert(live, [item(f"NEW-{seq}")], seed=seq, seq=seq))
        take(live, tmp_path, keep=2)
    assert [seq for seq, _ in snapshot.snapshots(tmp_path)] == [4, 3]
    state = snapshot.read_valid(tmp_path / "snapshot-000000000004", live.version, live.fingerprint)
    assert state is not None and {i["item_id"] for i in state["items"]} == {f"NEW-{i}" for i in range(1, 5)}
    np.testing.assert_array_equal(np.load(tmp_path / "snapshot-000000000004" / "present.npy"),
                                  live.bundle.index.present[: len(live.bundle.catalog)])
