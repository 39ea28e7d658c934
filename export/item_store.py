"""The item store: SQLite (WAL mode) mapping item ids to HNSW labels, with titles and attributes.

Schema (SCHEMA_VERSION 1), laid out for live writes (upserts, deletes) as well as the build:

    items      label INTEGER PRIMARY KEY  -- the item's label in the HNSW index, never reused
               item_id TEXT UNIQUE NOT NULL, title, text, attributes (JSON object of strings),
               created_at, updated_at (epoch seconds, NULL when unknown),
               deleted (0/1: a tombstone, the label stays taken), version (bumped per write,
               so replaying a write-ahead log entry twice is a no-op)
    meta       key TEXT PRIMARY KEY, value TEXT -- schema_version, created_at

Live writes are logged by server/live/wal.py, never here. A bundle's items.sqlite is
immutable: `open(readonly=True)` opens it with SQLite's
`immutable=1`, so no -wal/-shm files appear next to it and the bundle's checksums hold.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from export.errors import BundleError, InvalidInput

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE items (
    label INTEGER PRIMARY KEY,
    item_id TEXT UNIQUE NOT NULL,
    title TEXT NOT NULL DEFAULT '',
    text TEXT NOT NULL DEFAULT '',
    attributes TEXT NOT NULL DEFAULT '{}',
    created_at REAL,
    updated_at REAL,
    deleted INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class ItemRecord:
    """One catalog item as imported (attributes are strings, created_at epoch seconds)."""

    item_id: str
    title: str
    text: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    created_at: float | None = None


@dataclass
class Catalog:
    """In-memory, label-indexed view of the store for the serving hot path.

    Position i of every list/array describes HNSW label i.
    """

    item_ids: list[str]
    titles: list[str]
    attributes: list[dict[str, str]]
    created_at: np.ndarray
    deleted: np.ndarray
    label_of: dict[str, int]

    def __len__(self) -> int:
        return len(self.item_ids)


class ItemStore:
    """Item id <-> label mapping and item metadata, in one SQLite file."""

    def __init__(self, connection: sqlite3.Connection, path: Path, readonly: bool) -> None:
        self._db = connection
        self.path = path
        self.readonly = readonly

    @classmethod
    def create(cls, path: str | Path) -> "ItemStore":
        """A new, empty store at path (which must not exist), in WAL mode."""
        path = Path(path)
        if path.exists():
            raise InvalidInput(f"item store {path} already exists")
        db = sqlite3.connect(path)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        with db:
            db.executemany(
                "INSERT INTO meta(key, value) VALUES (?, ?)",
                [("schema_version", str(SCHEMA_VERSION)), ("created_at", repr(time.time()))],
            )
        return cls(db, path, readonly=False)

    @classmethod
    def open(cls, path: str | Path, *, readonly: bool = False) -> "ItemStore":
        """An existing store; readonly opens it as immutable (the bundle's copy)."""
        path = Path(path)
        if not path.is_file():
            raise BundleError(f"no item store at {path}")
        try:
            if readonly:
                db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
            else:
                db = sqlite3.connect(path)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
            version = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise BundleError(f"{path} is not an item store: {exc}") from exc
        if version is None or int(version[0]) != SCHEMA_VERSION:
            db.close()
            raise BundleError(f"{path}: item store schema {version} is not {SCHEMA_VERSION}")
        return cls(db, path, readonly)

    def add_items(self, records: Iterable[ItemRecord]) -> list[int]:
        """Insert new items; labels continue after the highest existing one (0.. in a new store)."""
        now = time.time()
        start = self._db.execute("SELECT COALESCE(MAX(label), -1) + 1 FROM items").fetchone()[0]
        rows = [
            (start + i, r.item_id, r.title, r.text,
             json.dumps(r.attributes, ensure_ascii=False, sort_keys=True), r.created_at, now)
            for i, r in enumerate(records)
        ]
        try:
            with self._db:
                self._db.executemany(
                    "INSERT INTO items(label, item_id, title, text, attributes, created_at,"
                    " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)", rows,
                )
        except sqlite3.IntegrityError as exc:
            raise InvalidInput(f"item store: {exc} (duplicate item_id?)") from exc
        return [row[0] for row in rows]

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def texts(self, batch: int = 10000) -> Iterator[tuple[int, str, str, dict[str, str]]]:
        """(label, title, text, attributes) in label order, read in batches."""
        cursor = self._db.execute("SELECT label, title, text, attributes FROM items ORDER BY label")
        while chunk := cursor.fetchmany(batch):
            for label, title, text, attributes in chunk:
                yield label, title, text, json.loads(attributes)

    def catalog(self, batch: int = 50_000) -> Catalog:
        """Every item (deleted ones included, flagged) as a label-indexed Catalog."""
        count = len(self)
        item_ids: list[str] = []
        titles: list[str] = []
        attributes: list[dict[str, str]] = []
        created_at = np.full(count, np.nan, dtype=np.float64)
        deleted = np.zeros(count, dtype=bool)
        # Attribute names and values repeat across items (category, brand): share one string
        # per distinct value instead of one per item (about half the memory at 1M items).
        shared: dict[str, str] = {}

        def interned(pairs: list[tuple[str, str]]) -> dict[str, str]:
            return {shared.setdefault(k, k): shared.setdefault(v, v) for k, v in pairs}

        decoder = json.JSONDecoder(object_pairs_hook=interned)
        cursor = self._db.execute(
            "SELECT label, item_id, title, attributes, created_at, deleted FROM items ORDER BY label"
        )
        while rows := cursor.fetchmany(batch):
            for label, item_id, title, attrs, created, gone in rows:
                if label != len(item_ids):
                    raise BundleError(f"{self.path}: item labels are not contiguous at {label}")
                item_ids.append(item_id)
                titles.append(title)
                attributes.append(decoder.decode(attrs))
                if created is not None:
                    created_at[label] = created
                deleted[label] = bool(gone)
        return Catalog(
            item_ids=item_ids, titles=titles, attributes=attributes, created_at=created_at,
            deleted=deleted, label_of={item_id: label for label, item_id in enumerate(item_ids)},
        )

    def close(self) -> None:
        """Checkpoint the WAL into the main file (so the file alone is complete) and close."""
        if not self.readonly:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()

    def __enter__(self) -> "ItemStore":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
