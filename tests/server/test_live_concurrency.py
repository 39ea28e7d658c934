"""Reader/writer discipline under concurrent load, and background compaction, on real hnswlib.

hnswlib releases the GIL in knn_query and add_items, so threads really overlap inside it;
a probe around the index counts every moment an add or delete ran while a query did.
"""

from __future__ import annotations

import asyncio
import threading
import time

import hnswlib
import numpy as np

from export.bundle import Manifest
from server.live.compaction import Compaction, compaction_due
from server.live.config import LiveConfig
from server.retrieval.vector_index import VectorIndex
from tests.server.live_support import delete, fresh_live, item, unit_vectors, upsert

DIM = 32
_WRITES = ("add_items", "mark_deleted", "unmark_deleted", "resize_index")


class ProbedIndex:
    """Delegates to a real hnswlib index and counts queries that overlapped a write."""

    def __init__(self, real: hnswlib.Index) -> None:
        self.real, self.queries, self.writing, self.overlaps = real, 0, False, 0
        self._lock = threading.Lock()

    def knn_query(self, *args, **kwargs):
        with self._lock:
            self.overlaps += self.writing
            self.queries += 1
        try:
            return self.real.knn_query(*args, **kwargs)
        finally:
            with self._lock:
                self.queries -= 1

    def _write(self, name, *args, **kwargs):
        with self._lock:
            self.overlaps += self.queries > 0
            self.writing = True
        try:
            return getattr(self.real, name)(*args, **kwargs)
        finally:
            with self._lock:
                self.writing = False

    def __getattr__(self, name):
        if name in _WRITES:
            return lambda *a, **k: self._write(name, *a, **k)
        return getattr(self.real, name)


def _probed_index(n: int = 3000) -> tuple[ProbedIndex, np.ndarray]:
    vectors = unit_vectors(n, DIM, seed=0)
    real = hnswlib.Index(space="ip", dim=DIM)
    real.init_index(max_elements=n + 50_000, M=16, ef_construction=100)
    real.add_items(vectors, np.arange(n))
    return ProbedIndex(real), vectors


def _hammer(query, write, seconds: float = 1.5, readers: int = 3) -> list[BaseException]:
    """Readers and one writer in threads for `seconds`; returns what they raised."""
    stop = time.monotonic() + seconds
    errors: list[BaseException] = []

    def run(fn):
        try:
            while time.monotonic() < stop:
                fn()
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(query,)) for _ in range(readers)]
    threads.append(threading.Thread(target=run, args=(write,)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_the_probe_sees_overlaps_when_nothing_guards_the_index():
    probe, vectors = _probed_index()
    queries = vectors[:64]
    rng = np.random.default_rng(1)
    labels = iter(range(10_000, 10_000_000))

    def write():
        probe.add_items(unit_vectors(16, DIM, int(rng.integers(1 << 30))), [next(labels) for _ in range(16)])

    _hammer(lambda: probe.knn_query(queries, k=10), write)
    # Without the lock adds do run during queries (and such queries can fail outright:
    # "Cannot return the results in a contiguous 2D array").
    assert probe.overlaps > 0


def test_no_add_or_delete_ever_runs_while_a_query_does():
    probe, vectors = _probed_index()
    index = VectorIndex(probe, default_ef=32)
    queries = vectors[:64]
    rng = np.random.default_rng(2)
    next_label = [10_000]
    deleted: set[int] = set()
    leaked: list[int] = []

    def write():
        new = np.arange(next_label[0], next_label[0] + 16)
        next_label[0] += 16
        index.add(unit_vectors(16, DIM, int(rng.integers(1 << 30))), new)
        gone = rng.choice(next_label[0], size=4, replace=False)
        index.delete(gone)
        deleted.update(gone.tolist())

    def query():
        snapshot = set(deleted)  # deleted before this query started: must never come back
        labels, _ = index.knn(queries, 10)
        leaked.extend(set(labels.ravel().tolist()) & snapshot)

    assert _hammer(query, write) == []
    assert probe.overlaps == 0
    assert leaked == []
    assert next_label[0] > 10_016  # the writer really ran concurrently


async def test_compaction_rebuilds_without_deleted_items_and_catches_up_on_writes(small_bundle):
    live = fresh_live(small_bundle)
    config = LiveConfig(compaction_deleted_share=0.2, compaction_min_deleted=10)
    ids = live.bundle.catalog.item_ids
    index = live.bundle.index
    live.apply(delete(ids[:120], seq=1))  # 30% of 400
    assert compaction_due(index, config)
    compaction = Compaction(live)
    # writes that land while the new graph is being built
    live.apply(upsert(live, [item("NEW-1"), item(ids[0])], seed=5, seq=2))  # a new one, a comeback
    live.apply(delete([ids[200]], seq=3))
    await asyncio.wait_for(compaction.task, 60)
    assert compaction.finish()
    assert not compaction_due(index, config)
    assert index.size == 400 - 120 + 2 - 1
    # only ids[200] (deleted after the rebuild started) is still stored, marked deleted
    assert index.deleted_count == 1 and index.index.get_current_count() == index.size + 1
    present = np.flatnonzero(index.present)
    labels, _ = index.knn(index.vectors[present[:50]], 10)
    assert set(labels.ravel().tolist()) <= set(present.tolist())
    new = live.bundle.catalog.label_of["NEW-1"]
    assert index.knn(index.vectors[new][None], 1)[0][0, 0] == new
    # recall@10 against exact search over the live items
    queries = index.vectors[present]
    exact = np.argsort(-(queries @ queries.T), axis=1)[:, :10]
    found, _ = index.knn(queries, 10, ef=64)
    recall = np.mean([len(set(present[e]) & set(f)) / 10 for e, f in zip(exact, found)])
    assert recall >= 0.95


async def test_reads_go_on_while_a_compaction_builds():
    """The rebuild runs in a thread: queries on the event loop complete while it builds."""
    from types import SimpleNamespace

    n = 8000
    vectors = unit_vectors(n, DIM, seed=3)
    graph = hnswlib.Index(space="ip", dim=DIM)
    graph.init_index(max_elements=n, M=16, ef_construction=100)
    graph.add_items(vectors, np.arange(n))
    index = VectorIndex(graph, default_ef=32)
    index.delete(np.arange(0, n, 3))
    manifest = Manifest.from_json({"format_version": 1, "index": {"m": 16, "ef_construction": 100}})
    live = SimpleNamespace(bundle=SimpleNamespace(manifest=manifest),
                           overlay=SimpleNamespace(index=index), dirty_labels=None)
    compaction = Compaction(live)
    during = 0
    while not compaction.done():
        labels, _ = index.knn(vectors[during % n][None], 10)
        assert not (labels % 3 == 0).any()  # deleted items stay out while the old graph serves
        during += 1
        await asyncio.sleep(0)
    assert during > 10  # reads were answered while the new graph was being built
    assert compaction.finish() and index.index.get_current_count() == index.size
