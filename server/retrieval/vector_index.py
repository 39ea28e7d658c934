"""The served item vectors: an hnswlib index plus a dense copy for exact search and features.

All index access goes through `lock` (queries: read side; live writes: write side). The
dense matrix keeps exact scoring (filters, reranking, diversity) off hnswlib's Python API.
"""

from __future__ import annotations

import threading

import hnswlib
import numpy as np

from server.retrieval.dense_rows import write_rows
from server.retrieval.rwlock import ReadWriteLock


class VectorIndex:
    """hnswlib index (inner product on normalised vectors) + label-indexed vector matrix."""

    def __init__(self, index: hnswlib.Index, default_ef: int) -> None:
        self.index = index
        self.default_ef = default_ef
        self.dim = index.dim
        self.lock = ReadWriteLock()
        self._ef_lock = threading.Lock()
        count = index.get_current_count()
        labels = np.asarray(index.get_ids_list(), dtype=np.int64)
        size = int(labels.max()) + 1 if count else 0
        self.vectors = np.zeros((max(size, 1), self.dim), dtype=np.float32)
        if count:
            self.vectors[labels] = np.asarray(index.get_items(labels), dtype=np.float32)
        self.present = np.zeros(len(self.vectors), dtype=bool)
        self.present[labels] = True
        self.live_count = int(count)
        index.set_ef(default_ef)

    def load_parts(self, index: hnswlib.Index, vectors: np.ndarray, present: np.ndarray) -> None:
        """Replace everything (restoring a snapshot: hnswlib cannot return deleted items'
        vectors, so the dense copy comes with it)."""
        index.set_ef(self.default_ef)
        with self.lock.write():
            self.index = index
            self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
            self.present = np.asarray(present, dtype=bool).copy()
            self.live_count = int(self.present.sum())

    def replace_graph(self, index: hnswlib.Index) -> None:
        """Swap in another hnswlib index over the same labels (a compacted rebuild)."""
        index.set_ef(self.default_ef)
        with self.lock.write():
            self.index = index

    @property
    def deleted_count(self) -> int:
        """Items hnswlib still stores (and traverses) although they are deleted."""
        return max(0, self.index.get_current_count() - self.live_count)

    @property
    def stored_count(self) -> int:
        """Items the index stores, deleted ones included (what its memory holds)."""
        return self.index.get_current_count()

    @property
    def size(self) -> int:
        """Items that can be returned (added and not deleted)."""
        return self.live_count

    def knn(self, queries: np.ndarray, k: int, ef: int | None = None,
            threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(labels, similarities) [n_queries, k']; k' = min(k, live elements). Requests search
        on one thread; `threads` is for batch work (deriving the cold bridge at load)."""
        with self.lock.read():
            k = max(1, min(k, self.live_count))
            ef = max(ef or self.default_ef, k)
            with self._ef_lock:  # ef is index-wide state in hnswlib
                if ef != self.default_ef:
                    self.index.set_ef(ef)
                try:
                    labels, distances = self.index.knn_query(queries, k=k, num_threads=threads)
                finally:
                    if ef != self.default_ef:
                        self.index.set_ef(self.default_ef)
        return labels.astype(np.int64), (1.0 - distances).astype(np.float32)

    def exact(self, query: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of `labels` by inner product with `query` (brute force)."""
        scores = self.vectors[labels] @ query
        if len(labels) > k:
            top = np.argpartition(-scores, k - 1)[:k]
        else:
            top = np.arange(len(labels))
        order = top[np.argsort(-scores[top], kind="stable")]
        return labels[order], scores[order].astype(np.float32)

    def add(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        """Add or replace items (writer side). Grows the index and the dense copy as needed."""
        with self.lock.write():
            needed = self.index.get_current_count() + len(labels)
            if needed > self.index.get_max_elements():
                self.index.resize_index(max(needed, int(self.index.get_max_elements() * 1.5) + 16))
            for label in labels.tolist():
                try:
                    self.index.unmark_deleted(label)
                except RuntimeError:
                    pass  # not previously deleted (or new)
            self.index.add_items(vectors, labels, replace_deleted=False)
            self.vectors, self.present = write_rows(self.vectors, self.present, labels, vectors)
            self.live_count = int(self.present.sum())

    def delete(self, labels: np.ndarray) -> None:
        """Mark items deleted (writer side): hnswlib skips them in results from now on."""
        with self.lock.write():
            for label in labels.tolist():
                try:
                    self.index.mark_deleted(label)
                except RuntimeError:
                    pass  # already deleted or never present
            self.present[labels[labels < len(self.present)]] = False
            self.live_count = int(self.present.sum())
