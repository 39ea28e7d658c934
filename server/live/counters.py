"""Online popularity and co-occurrence: live event counts laid over the bundle's tables.

The bundle's tables are normalised to 0..1 (the strongest item or pair = 1). Live counts
are kept raw (weighted events; 1/distance per co-occurring pair, as the build counts them)
and served as `bundle + raw / saturation`, capped at 1: `saturation` live events make an
item as popular as the bundle's most popular one. Popularity changes at once; co-occurrence
is merged into the served sparse matrix at most every `publish_interval_s` (one sparse add),
because rebuilding a CSR matrix per event would cost O(nnz) each time.
"""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np
import scipy.sparse as sp

from server.ranking.features import FeatureTables


def resize_square(matrix: sp.csr_matrix, size: int) -> sp.csr_matrix:
    """The same entries in a size x size CSR matrix (size >= the current one)."""
    matrix = matrix.tocsr()
    rows = matrix.shape[0]
    if rows == size and matrix.shape[1] == size:
        return matrix
    indptr = np.concatenate([matrix.indptr, np.full(size - rows, matrix.indptr[-1], matrix.indptr.dtype)])
    return sp.csr_matrix((matrix.data, matrix.indices, indptr), shape=(size, size))


def _grow(array: np.ndarray, size: int, fill) -> np.ndarray:
    if len(array) >= size:
        return array
    grown = np.full(size, fill, dtype=array.dtype)
    grown[: len(array)] = array
    return grown


class LiveCounters:
    """Raw live counts for one served bundle, written into its FeatureTables."""

    def __init__(self, tables: FeatureTables, *, saturation: float, window: int,
                 backward_weight: float, publish_interval_s: float) -> None:
        self.tables = tables
        self.saturation = max(saturation, 1e-9)
        self.window = window
        self.backward_weight = backward_weight
        self.publish_interval_s = publish_interval_s
        self.base_popularity = tables.popularity.copy()
        self.base_cooccurrence = tables.cooccurrence.tocsr()
        self.popularity = np.zeros(len(self.base_popularity), np.float64)
        self.cooccurrence = sp.csr_matrix(self.base_cooccurrence.shape, dtype=np.float64)
        self._pending: dict[tuple[int, int], float] = defaultdict(float)
        self._published_at = time.monotonic()

    @property
    def capacity(self) -> int:
        return len(self.tables.popularity)

    @property
    def has_pending(self) -> bool:
        """Co-occurrence counts recorded but not yet published to ranking."""
        return bool(self._pending)

    def grow(self, size: int) -> None:
        """Make room for labels < size in every table (amortised: grows by half at least)."""
        if size <= self.capacity:
            return
        size = max(size, int(self.capacity * 1.5) + 16)
        t = self.tables
        t.popularity = _grow(t.popularity, size, 0.0)
        t.created_at = _grow(t.created_at, size, np.nan)
        t.attribute_codes = {name: _grow(codes, size, -1) for name, codes in t.attribute_codes.items()}
        t.cooccurrence = resize_square(t.cooccurrence, size)
        self.base_popularity = _grow(self.base_popularity, size, 0.0)
        self.popularity = _grow(self.popularity, size, 0.0)
        self.base_cooccurrence = resize_square(self.base_cooccurrence, size)
        self.cooccurrence = resize_square(self.cooccurrence, size)

    def add_event(self, label: int, weight: float, previous: np.ndarray) -> None:
        """One positive event on `label`; `previous` = the user's items before it, oldest first."""
        self.popularity[label] += weight
        self.tables.popularity[label] = min(1.0, self.base_popularity[label]
                                            + self.popularity[label] / self.saturation)
        # item-to-item and transition neighbours (server/ranking/features.py) learn at once
        self.tables.record_interaction(label, previous, weight / self.saturation, self.window)
        recent = previous[-self.window:][::-1]  # distance 1 = the item just before
        for distance, other in enumerate(recent.tolist(), start=1):
            if other == label:
                continue
            self._pending[(other, label)] += 1.0 / distance
            self._pending[(label, other)] += self.backward_weight / distance

    def publish(self, force: bool = False) -> bool:
        """Merge pending co-occurrence counts into the served matrix when due. True if merged."""
        if not self._pending or (not force and time.monotonic() - self._published_at < self.publish_interval_s):
            return False
        keys = np.fromiter((k for pair in self._pending for k in pair), np.int64, 2 * len(self._pending))
        values = np.fromiter(self._pending.values(), np.float64, len(self._pending))
        size = self.capacity
        delta = sp.csr_matrix((values, (keys[0::2], keys[1::2])), shape=(size, size))
        self.cooccurrence = resize_square(self.cooccurrence, size) + delta
        self._pending.clear()
        self._published_at = time.monotonic()
        self._serve_cooccurrence()
        return True

    def _serve_cooccurrence(self) -> None:
        size = self.capacity
        served = resize_square(self.base_cooccurrence, size) + self.cooccurrence / self.saturation
        served = served.tocsr().astype(np.float32)
        np.minimum(served.data, 1.0, out=served.data)
        self.tables.cooccurrence = served

    # ---- snapshots -------------------------------------------------------------------------

    def raw_state(self) -> tuple[np.ndarray, sp.csr_matrix]:
        """(raw live popularity, raw live co-occurrence), pending counts included."""
        self.publish(force=True)
        return self.popularity.copy(), self.cooccurrence.copy()

    def restore(self, popularity: np.ndarray, cooccurrence: sp.csr_matrix) -> None:
        self.grow(max(len(popularity), cooccurrence.shape[0]))
        self.popularity[: len(popularity)] = popularity
        self.cooccurrence = resize_square(cooccurrence.astype(np.float64), self.capacity)
        live = np.flatnonzero(self.popularity)
        self.tables.popularity[live] = np.minimum(
            1.0, self.base_popularity[live] + self.popularity[live] / self.saturation)
        self._serve_cooccurrence()
