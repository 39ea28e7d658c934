"""Helpers for the live-write tests: writes with real vectors, a loaded bundle's live state."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from server.live.config import LiveConfig
from server.live.live_state import LiveState
from server.live.records import DELETE, INTERACTIONS, UPSERT, Event, ItemWrite, Write
from server.served_bundle import ServedBundle


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def fresh_live(bundle_path: Path, **config) -> LiveState:
    return LiveState(ServedBundle.load(bundle_path), LiveConfig(**config))


def upsert(live: LiveState, items: list[ItemWrite], seed: int = 0, seq: int = 0) -> Write:
    vectors = unit_vectors(len(items), live.bundle.index.dim, seed)
    return Write(UPSERT, time.time(), items=tuple(items), vectors=vectors, encoder=live.fingerprint, seq=seq)


def delete(item_ids: list[str], seq: int = 0) -> Write:
    return Write(DELETE, time.time(), item_ids=tuple(item_ids), seq=seq)


def interactions(events: list[tuple[str, str, str]], seq: int = 0) -> Write:
    now = time.time()
    return Write(INTERACTIONS, now, events=tuple(Event(u, i, e, 1.0, now) for u, i, e in events), seq=seq)


def item(item_id: str, **attrs: str) -> ItemWrite:
    return ItemWrite(item_id, f"title of {item_id}", f"text of {item_id}", attrs)


def knn_labels(live: LiveState, vector: np.ndarray, k: int = 10) -> list[int]:
    """Nearest labels at a search breadth covering the small test catalog: these tests ask what
    the index holds, not how well HNSW recalls (a random upserted vector lies far from the tiny
    encoder's cone of items, where the default ef sometimes misses it)."""
    return live.bundle.index.knn(vector[None, :], k, ef=max(k, 2 * len(live.bundle.catalog)))[0][0].tolist()


def state_of(live) -> dict:
    """Everything a write can change, comparable with ==."""
    b = live.bundle
    live.counters.publish(force=True)
    n = len(b.catalog)
    return {
        "ids": list(b.catalog.item_ids), "titles": list(b.catalog.titles),
        "attributes": [dict(a) for a in b.catalog.attributes],
        "present": b.index.present[:n].tolist(), "vectors": b.index.vectors[:n].round(6).tolist(),
        "popularity": b.tables.popularity[:n].round(6).tolist(),
        "cooccurrence": b.tables.cooccurrence[:n, :n].toarray().round(6).tolist(),
        "created_at": b.tables.created_at[:n].tolist(),
        "attribute_codes": {name: codes[:n].tolist() for name, codes in b.tables.attribute_codes.items()},
        **{name: (table.labels.tolist(), table.scores.tolist(), dict(table.pending))
           for name, table in (("item_knn", b.tables.item_knn), ("transitions", b.tables.transitions))},
        "users": b.users.live_overlay(), "last_applied": live.last_applied,
        "versions": {k: v.version for k, v in live.items.items()},
    }
