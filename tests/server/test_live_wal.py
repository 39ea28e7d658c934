"""The write-ahead log over real SQLite: durability settings, sequence numbers, round trips."""

from __future__ import annotations

import sqlite3
import time

import numpy as np
import pytest

from export.errors import BundleError
from server.live.records import DELETE, INTERACTIONS, UPSERT, Event, ItemWrite, Write
from server.live.wal import WriteAheadLog


def _writes(n_upserts: int = 2) -> list[Write]:
    vectors = np.arange(2 * 4, dtype=np.float32).reshape(2, 4)
    writes = [Write(UPSERT, 100.0 + i, items=(ItemWrite("a", "A", "ä text", {"colour": "red"}),
                                              ItemWrite("b", "B")), vectors=vectors, encoder="enc")
              for i in range(n_upserts)]
    writes.append(Write(DELETE, 200.0, item_ids=("a",)))
    writes.append(Write(INTERACTIONS, 300.0, events=(Event("u", "b", "click", 0.5, 299.5),)))
    return writes


def test_commits_are_full_sync_in_wal_mode(tmp_path):
    wal = WriteAheadLog(tmp_path)
    assert wal._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert wal._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: fsync on every commit
    wal.close()


def test_group_commit_assigns_increasing_sequences_and_round_trips(tmp_path):
    wal = WriteAheadLog(tmp_path)
    writes = _writes()
    seqs = wal.append(writes)
    assert seqs == [1, 2, 3, 4] and [w.seq for w in writes] == seqs
    assert wal.append(_writes(1)) == [5, 6, 7]
    wal.close()

    reopened = WriteAheadLog(tmp_path)  # what survives a restart
    read = list(reopened.read_after(0, batch=2))
    assert [w.seq for w in read] == [1, 2, 3, 4, 5, 6, 7]
    first = read[0]
    assert first.kind == UPSERT and first.encoder == "enc" and first.received_at == 100.0
    assert first.items[0] == ItemWrite("a", "A", "ä text", {"colour": "red"})
    np.testing.assert_array_equal(first.vectors, writes[0].vectors)
    assert read[2].item_ids == ("a",)
    assert read[3].events == (Event("u", "b", "click", 0.5, 299.5),)
    assert [w.seq for w in reopened.read_after(5)] == [6, 7]


def test_sequence_never_goes_back_after_truncation(tmp_path):
    wal = WriteAheadLog(tmp_path)
    wal.append(_writes())
    assert wal.truncate(through_seq=4, received_before=time.time()) == 4
    assert list(wal.read_after(0)) == []
    assert wal.meta("truncated_through_seq") == "4"
    assert wal.append(_writes(1)) == [5, 6, 7]  # AUTOINCREMENT: never reused


def test_truncation_keeps_recent_writes(tmp_path):
    wal = WriteAheadLog(tmp_path)
    wal.append(_writes())  # received at 100..300
    assert wal.truncate(through_seq=4, received_before=150.0) == 2
    assert [w.seq for w in wal.read_after(0)] == [3, 4]
    assert wal.last_sequence_before(250.0) == 3


def test_a_failed_transaction_logs_nothing(tmp_path):
    wal = WriteAheadLog(tmp_path)
    bad = _writes()
    bad[1].kind = "nonsense"  # violates the CHECK constraint half way through the group
    with pytest.raises(sqlite3.IntegrityError):
        wal.append(bad)
    assert list(wal.read_after(0)) == []
    assert wal.append(_writes(1))[0] >= 1


def test_refuses_a_file_that_is_not_a_log(tmp_path):
    (tmp_path / WriteAheadLog.FILE).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(BundleError):
        WriteAheadLog(tmp_path)
