"""The `milvus` retrieval backend: one Milvus collection per bundle version holds the ANN index.

Each row is (id = label, vector, attrs JSON). A request's attribute filters and exclusions
become a Milvus filter expression, so Milvus returns the top-k allowed items directly
(no post-filter over-fetching). Live upserts and deletes are written through before they
become visible. The dense vector copy stays in the process: ranking reads candidate and
history vectors on every request, and a round trip per request would cost more than it saves.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from export.errors import BundleError
from export.milvus_collection import ATTRS, ID, INSERT_BATCH, VECTOR, batches, item_rows
from server.retrieval.dense_rows import write_rows
from server.retrieval.filters import ItemFilter
from server.retrieval.rwlock import ReadWriteLock


def _literal(value: str) -> str:
    return json.dumps(str(value))  # a double-quoted string with escapes Milvus accepts


def filter_expression(item_filter: ItemFilter) -> str:
    """The Milvus boolean expression for a request's filter ("" = no restriction)."""
    clauses = []
    for name, value in sorted(item_filter.attribute_equals.items()):
        clauses.append(f"{ATTRS}[{_literal(name)}] == {_literal(value)}")
    for name, values in sorted(item_filter.attribute_in.items()):
        if not values:
            return f"{ID} < 0"  # "one of nothing": no item passes
        # JSON-path `in` is not supported by every Milvus server (Lite): an OR chain is.
        alternatives = " or ".join(f"{ATTRS}[{_literal(name)}] == {_literal(v)}" for v in values)
        clauses.append(f"({alternatives})")
    if item_filter.exclude_labels:
        excluded = ", ".join(str(int(label)) for label in sorted(set(item_filter.exclude_labels)))
        clauses.append(f"{ID} not in [{excluded}]")
    return " and ".join(clauses)


class MilvusIndex:
    """RetrievalBackend + FilteringBackend over a Milvus collection (see module docstring)."""

    def __init__(self, client: Any, collection: str, vectors: np.ndarray, present: np.ndarray,
                 attributes: list[dict[str, str]], *, ef: int) -> None:
        if not client.has_collection(collection):
            raise BundleError(f"Milvus collection {collection} does not exist (was the bundle "
                              "built with --retrieval milvus against this server?)")
        client.load_collection(collection)
        self.client = client
        self.collection = collection
        self.default_ef = ef
        self.dim = int(vectors.shape[1])
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.present = np.asarray(present, dtype=bool).copy()
        self.attributes = attributes  # the live catalog's list: upserts update it first
        self.lock = ReadWriteLock()  # guards the dense copy while a write grows it
        self.live_count = int(self.present.sum())

    @property
    def size(self) -> int:
        return self.live_count

    @property
    def stored_count(self) -> int:
        """Milvus removes deleted rows itself: what it stores is what is live."""
        return self.live_count

    @property
    def deleted_count(self) -> int:
        return 0  # nothing for a compaction to drop (server/live/compaction.py)

    def load_parts(self, graph: None, vectors: np.ndarray, present: np.ndarray) -> None:
        """Restore the dense copy from a live snapshot; Milvus already holds every write."""
        with self.lock.write():
            self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
            self.present = np.asarray(present, dtype=bool).copy()
            self.live_count = int(self.present.sum())

    def _search(self, queries: np.ndarray, k: int, expression: str, ef: int | None) -> tuple[np.ndarray, np.ndarray]:
        ef = max(ef or self.default_ef, k)
        hits = self.client.search(
            self.collection, data=np.asarray(queries, np.float32).tolist(), limit=k,
            filter=expression, output_fields=[ID], anns_field=VECTOR,
            search_params={"metric_type": "IP", "params": {"ef": ef}})
        width = max((len(h) for h in hits), default=0)
        labels = np.full((len(hits), width), -1, np.int64)
        sims = np.zeros((len(hits), width), np.float32)
        for row, found in enumerate(hits):
            labels[row, :len(found)] = [hit[ID] for hit in found]
            sims[row, :len(found)] = [hit["distance"] for hit in found]
        return labels, sims

    def knn(self, queries: np.ndarray, k: int, ef: int | None = None,
            threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(labels, similarities) [n_queries, k'], like VectorIndex.knn (the Milvus server
        chooses its own threads)."""
        k = max(1, min(k, self.live_count))
        return self._search(queries, k, "", ef)

    def search(self, query: np.ndarray, k: int, item_filter: ItemFilter) -> np.ndarray:
        """Labels of the top-k items that pass `item_filter`, best first."""
        if k <= 0 or self.live_count == 0:
            return np.empty(0, np.int64)
        labels, _ = self._search(query[None, :], k, filter_expression(item_filter), None)
        return labels[0][labels[0] >= 0]

    def exact(self, query: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of `labels` by inner product with `query` (brute force on the dense copy)."""
        with self.lock.read():
            scores = self.vectors[labels] @ query
        top = np.argpartition(-scores, k - 1)[:k] if len(labels) > k else np.arange(len(labels))
        order = top[np.argsort(-scores[top], kind="stable")]
        return labels[order], scores[order].astype(np.float32)

    def add(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        """Upsert items: written to Milvus first, then to the dense copy (writer side)."""
        labels = np.asarray(labels, np.int64)
        for batch in batches(np.arange(len(labels)), INSERT_BATCH):
            self.client.upsert(self.collection, item_rows(vectors[batch], labels[batch], self.attributes))
        with self.lock.write():
            self.vectors, self.present = write_rows(self.vectors, self.present, labels, vectors)
            self.live_count = int(self.present.sum())

    def delete(self, labels: np.ndarray) -> None:
        """Delete items from Milvus and mark them absent here (writer side)."""
        labels = np.asarray(labels, np.int64)
        self.client.delete(self.collection, ids=[int(label) for label in labels])
        with self.lock.write():
            self.present[labels[labels < len(self.present)]] = False
            self.live_count = int(self.present.sum())
