"""WriteAheadLog: every live write, durable in SQLite before it is acknowledged.

One row per write (`seq` is the write's sequence number: AUTOINCREMENT, so it never goes
back even after old rows are deleted). The database runs in WAL journal mode with
synchronous=FULL: a commit returns only after the log file is fsync'd, so an acknowledged
write survives a process kill or power loss. Many writes can share one transaction (group
commit: one fsync for all of them).

Upserts keep their embeddings (float32 bytes) and the fingerprint of the encoder that made
them, so a restart replays without re-embedding; a reload onto a different encoder
re-embeds from the logged texts.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Iterator

import numpy as np

from export.bundle import fsync_dir
from export.errors import BundleError
from server.live.records import DELETE, INTERACTIONS, UPSERT, Event, ItemWrite, Write

SCHEMA_VERSION = 2
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS writes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('{UPSERT}', '{DELETE}', '{INTERACTIONS}')),
    payload TEXT NOT NULL,
    vectors BLOB,
    encoder TEXT NOT NULL DEFAULT '',
    received_at REAL NOT NULL,
    request_id TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# Version 1 had no request_id (idempotency keys); the column is added in place.
_MIGRATE_1_TO_2 = "ALTER TABLE writes ADD COLUMN request_id TEXT NOT NULL DEFAULT ''"
_REQUEST_ID_INDEX = ("CREATE INDEX IF NOT EXISTS writes_request_id ON writes(request_id)"
                     " WHERE request_id != ''")


def _payload(write: Write) -> str:
    if write.kind == UPSERT:
        body = [[i.item_id, i.title, i.text, dict(i.attributes)] for i in write.items]
    elif write.kind == DELETE:
        body = list(write.item_ids)
    else:
        body = [[e.user_id, e.item_id, e.event, e.weight, e.timestamp] for e in write.events]
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def _write_from_row(seq: int, kind: str, payload: str, vectors: bytes | None, encoder: str,
                    received_at: float, request_id: str) -> Write:
    body = json.loads(payload)
    write = Write(kind=kind, received_at=received_at, encoder=encoder, seq=seq, request_id=request_id)
    if kind == UPSERT:
        write.items = tuple(ItemWrite(i, t, x, a) for i, t, x, a in body)
        write.vectors = np.frombuffer(vectors, dtype=np.float32).reshape(len(body), -1).copy()
    elif kind == DELETE:
        write.item_ids = tuple(body)
    else:
        write.events = tuple(Event(u, i, e, float(w), float(t)) for u, i, e, w, t in body)
    return write


class WriteAheadLog:
    """The log file `wal.sqlite` in the live directory. Thread-safe (one connection, a lock)."""

    FILE = "wal.sqlite"

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / self.FILE
        created = not self.path.exists()
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise BundleError(f"{self.path} is not a recserve write-ahead log: {exc}") from exc
        if version == 1:
            self._db.execute(_MIGRATE_1_TO_2)
        elif version not in (0, SCHEMA_VERSION):
            raise BundleError(f"{self.path}: log schema {version} is not {SCHEMA_VERSION}")
        if version != SCHEMA_VERSION:
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._db.execute(_REQUEST_ID_INDEX)
        if created:
            fsync_dir(self.directory)  # the new file's directory entry must survive a crash too

    def append(self, writes: list[Write]) -> list[int]:
        """Commit writes in one durable transaction; sets and returns their sequence numbers."""
        rows = [(w.kind, _payload(w), None if w.vectors is None else
                 np.ascontiguousarray(w.vectors, dtype=np.float32).tobytes(), w.encoder, w.received_at,
                 w.request_id)
                for w in writes]
        with self._lock:
            cursor = self._db.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                seqs = []
                for row in rows:
                    cursor.execute("INSERT INTO writes(kind, payload, vectors, encoder, received_at,"
                                   " request_id) VALUES (?, ?, ?, ?, ?, ?)", row)
                    seqs.append(int(cursor.lastrowid))
                cursor.execute("COMMIT")  # synchronous=FULL: returns after fsync
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
        for write, seq in zip(writes, seqs):
            write.seq = seq
        return seqs

    def read_batch(self, after_seq: int, limit: int) -> list[Write]:
        """Up to `limit` writes with sequence number > after_seq, in order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, kind, payload, vectors, encoder, received_at, request_id FROM writes"
                " WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)).fetchall()
        return [_write_from_row(*row) for row in rows]

    def request_ids_since(self, received_at: float) -> list[tuple[str, int, float]]:
        """(request_id, seq, received_at) of every logged write with an idempotency key
        received at or after `received_at`, oldest first (rebuilds the dedupe window)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT request_id, seq, received_at FROM writes WHERE request_id != ''"
                " AND received_at >= ? ORDER BY seq", (received_at,)).fetchall()
        return [(str(r), int(s), float(t)) for r, s, t in rows]

    def read_after(self, seq: int, batch: int = 512) -> Iterator[Write]:
        """Every write with sequence number > seq, in order (read in batches)."""
        while writes := self.read_batch(seq, batch):
            yield from writes
            seq = writes[-1].seq

    def last_sequence_before(self, received_at: float) -> int:
        """The highest sequence number of a write received before `received_at` (0 if none)."""
        with self._lock:
            row = self._db.execute("SELECT MAX(seq) FROM writes WHERE received_at < ?",
                                   (received_at,)).fetchone()
        return int(row[0] or 0) if row else 0

    def truncate(self, through_seq: int, received_before: float) -> int:
        """Delete writes with seq <= through_seq received before `received_before`."""
        with self._lock:
            row = self._db.execute(
                "SELECT MAX(seq), MAX(received_at) FROM writes WHERE seq <= ? AND received_at < ?",
                (through_seq, received_before)).fetchone()
            if not row or row[0] is None:
                return 0
            cursor = self._db.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            deleted = cursor.execute("DELETE FROM writes WHERE seq <= ?", (row[0],)).rowcount
            self._set_meta(cursor, "truncated_through_seq", str(row[0]))
            self._set_meta(cursor, "truncated_through_time", repr(float(row[1])))
            cursor.execute("COMMIT")
        return int(deleted)

    def meta(self, key: str, default: str | None = None) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            cursor = self._db.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            self._set_meta(cursor, key, value)
            cursor.execute("COMMIT")

    @staticmethod
    def _set_meta(cursor: sqlite3.Cursor, key: str, value: str) -> None:
        cursor.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def close(self) -> None:
        with self._lock:
            self._db.close()
