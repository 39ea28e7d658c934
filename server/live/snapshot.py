"""Snapshots of the live state: the index and counters as of one applied sequence number.

A snapshot is a folder `snapshot-<seq>` in the live directory:

    index.hnsw        the served hnswlib index (live items added, deleted ones marked)
    vectors.npy       the dense vector copy (hnswlib cannot return deleted items' vectors)
    present.npy       which labels can be returned
    popularity.npy    raw live popularity counts (server/live/counters.py)
    cooccurrence.npz  raw live co-occurrence counts
    item_knn_*.npy, transitions_*.npy
                      the neighbour tables as live interactions left them, with their pending
                      pairs as [source, target, strength] rows (absent from snapshots taken
                      before they were kept: the bundle's tables are used)
    state.json        seq, bundle version, encoder fingerprint, live items, live user
                      histories, and the sha256 of every other file (written last)

It is written into a temporary sibling, every file fsync'd, then renamed into place and the
directory fsync'd: a crash leaves either the whole snapshot or none. A snapshot is valid only
for the bundle version and encoder it was taken on, and only if its checksums match; on start
the newest valid one is loaded and the log is replayed after its seq.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from export.bundle import fsync_dir, sha256_file
from export.hnsw_index import load_index
from export.neighbours import NeighbourTable
from server.live.live_state import LiveState
from server.live.overlay import NEIGHBOUR_TABLES
from server.retrieval.vector_index import VectorIndex
from server.served_bundle import INDEX_HEADROOM

log = logging.getLogger(__name__)

FORMAT = 1
STATE_FILE = "state.json"
_NAME = re.compile(r"^snapshot-(\d+)$")


@dataclass
class SnapshotDraft:
    """A snapshot captured in memory (and its index saved) but not yet durable."""

    folder: Path
    seq: int
    arrays: dict[str, Any]
    state: dict[str, Any]


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def save_index(live: LiveState, path: Path) -> None:
    """Save the served hnswlib index (under its read lock: no add may run during the save)."""
    index = live.overlay.index
    if not isinstance(index, VectorIndex):
        return  # the milvus backend: Milvus holds the index, every write was written through
    with index.lock.read():
        index.index.save_index(str(path))


def capture(live: LiveState, folder: Path) -> SnapshotDraft:
    """Copy the state the snapshot needs; call with no write applied in between this and
    `save_index` (the writer does both while it holds writes back)."""
    popularity, cooccurrence = live.counters.raw_state()
    index = live.overlay.index
    arrays = {"vectors": index.vectors[: len(live.overlay.catalog)].copy(),
              "present": index.present[: len(live.overlay.catalog)].copy(),
              "popularity": popularity, "cooccurrence": cooccurrence}
    for name in NEIGHBOUR_TABLES:
        table = getattr(live.overlay.tables, name)
        arrays[name] = NeighbourTable(table.labels.copy(), table.scores.copy(), dict(table.pending))
    state = {"format": FORMAT, "seq": live.last_applied, "bundle_version": live.version,
             "fingerprint": live.fingerprint, "catalog_size": len(live.overlay.catalog),
             "items": live.items_state(), "users": live.overlay.users.live_overlay()}
    return SnapshotDraft(folder, live.last_applied, arrays, state)


def start_draft(directory: Path, seq: int) -> Path:
    """An empty temporary folder for the snapshot of seq."""
    folder = directory / f".snapshot-{seq}.tmp-{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def persist(draft: SnapshotDraft, keep: int) -> Path:
    """Write, fsync and rename the draft into place; prune older snapshots. Returns the path."""
    folder = draft.folder
    np.save(folder / "vectors.npy", draft.arrays["vectors"])
    np.save(folder / "present.npy", draft.arrays["present"])
    np.save(folder / "popularity.npy", draft.arrays["popularity"])
    sp.save_npz(folder / "cooccurrence.npz", draft.arrays["cooccurrence"].tocsr(), compressed=False)
    for name in NEIGHBOUR_TABLES:
        table = draft.arrays[name]
        table.save(folder, name)
        pending = np.array([(s, t, v) for (s, t), v in table.pending.items()], np.float64).reshape(-1, 3)
        np.save(folder / f"{name}_pending.npy", pending)
    files = sorted(p.name for p in folder.iterdir())
    for name in files:
        _fsync_file(folder / name)
    state = dict(draft.state, files={name: sha256_file(folder / name) for name in files})
    (folder / STATE_FILE).write_text(json.dumps(state))
    _fsync_file(folder / STATE_FILE)
    fsync_dir(folder)
    final = folder.parent / f"snapshot-{draft.seq:012d}"
    if final.exists():  # the same seq snapshotted again (nothing applied since): replace it
        shutil.rmtree(final)
    os.rename(folder, final)
    fsync_dir(folder.parent)
    prune(folder.parent, keep)
    return final


def snapshots(directory: Path) -> list[tuple[int, Path]]:
    """(seq, path) of every snapshot folder, newest first."""
    found = []
    for path in directory.iterdir() if directory.is_dir() else ():
        match = _NAME.match(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found, reverse=True)


def prune(directory: Path, keep: int) -> None:
    for _, path in snapshots(directory)[max(keep, 1):]:
        shutil.rmtree(path, ignore_errors=True)
    for path in directory.glob(".snapshot-*.tmp-*"):
        if path.is_dir() and not path.name.endswith(f".tmp-{os.getpid()}"):
            shutil.rmtree(path, ignore_errors=True)  # left by a crash during a snapshot


def read_valid(path: Path, bundle_version: str, fingerprint: str) -> dict | None:
    """The snapshot's state.json if it is complete, intact and for this bundle; else None."""
    try:
        state = json.loads((path / STATE_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("snapshot %s is unreadable (%s): ignored", path.name, exc)
        return None
    if state.get("format") != FORMAT or state.get("bundle_version") != bundle_version \
            or state.get("fingerprint") != fingerprint:
        log.info("snapshot %s is for bundle %s, not %s: ignored", path.name,
                 state.get("bundle_version"), bundle_version)
        return None
    for name, digest in (state.get("files") or {}).items():
        if not (path / name).is_file() or sha256_file(path / name) != digest:
            log.warning("snapshot %s: %s fails its checksum: ignored", path.name, name)
            return None
    return state


def newest_valid(directory: Path, bundle_version: str, fingerprint: str) -> tuple[Path, dict] | None:
    for _, path in snapshots(directory):
        state = read_valid(path, bundle_version, fingerprint)
        if state is not None:
            return path, state
    return None


def restore(live: LiveState, path: Path, state: dict) -> None:
    """Load a valid snapshot onto a freshly loaded bundle (before it serves)."""
    overlay = live.overlay
    if state["catalog_size"] < live.bundle_count:
        raise ValueError(f"snapshot {path.name} has fewer items than the bundle")
    live.restore_items(state["items"])
    if len(overlay.catalog) != state["catalog_size"]:
        raise ValueError(f"snapshot {path.name}: {len(overlay.catalog)} items restored, "
                         f"{state['catalog_size']} recorded")
    vectors = np.load(path / "vectors.npy")
    present = np.load(path / "present.npy")
    graph = None  # the milvus backend keeps no graph here (see save_index)
    if isinstance(overlay.index, VectorIndex):
        graph = load_index(path / "index.hnsw", dim=overlay.index.dim, ef=overlay.index.default_ef,
                           max_elements=int(len(vectors) * INDEX_HEADROOM) + 16)
    neighbours = {}
    for name in NEIGHBOUR_TABLES:
        if (path / f"{name}_labels.npy").is_file():  # (checksummed with the rest in read_valid)
            table = NeighbourTable.load(path, name)
            pending = np.load(path / f"{name}_pending.npy")
            table.pending = {(int(s), int(t)): float(v) for s, t, v in pending}
            neighbours[name] = table
    overlay.restore(graph, vectors, present, state["users"], np.load(path / "popularity.npy"),
                    sp.load_npz(path / "cooccurrence.npz"), neighbours)
    live.last_applied = int(state["seq"])
