"""Which history item stands behind a recommended item, for each kind of evidence.

`HistoryEvidence` flattens the history's neighbour rows (item-kNN, transitions,
co-occurrence) once per request; each returned item is then one vectorised lookup.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from server.ranking.scorer import Evidence


def _csr_entries(matrix: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(column labels, values, position in `rows`) of the given rows' entries."""
    inside = np.flatnonzero(rows < matrix.shape[0])
    starts, lengths = matrix.indptr[rows[inside]], np.diff(matrix.indptr)[rows[inside]]
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, np.int64), np.empty(0, np.float32), np.empty(0, np.int64)
    offsets = np.repeat(starts - np.r_[0, np.cumsum(lengths)[:-1]], lengths) + np.arange(total)
    return (matrix.indices[offsets].astype(np.int64), matrix.data[offsets],
            np.repeat(inside, lengths))


class _Entries:
    """One evidence kind: (neighbour label, strength, history position) of every entry."""

    def __init__(self, labels: np.ndarray, strength: np.ndarray, owner: np.ndarray) -> None:
        self.labels, self.strength, self.owner = labels, strength, owner

    def strongest(self, label: int, history: np.ndarray) -> int | None:
        """History position whose entry for `label` is strongest, never the item itself."""
        hit = np.flatnonzero((self.labels == label) & (history[self.owner] != label))
        if len(hit) == 0:
            return None
        return int(self.owner[hit[np.argmax(self.strength[hit])]])


class HistoryEvidence:
    def __init__(self, *, history: np.ndarray, history_weights: np.ndarray,
                 recent_weights: np.ndarray, tables, titles: list[str]) -> None:
        self.history, self.titles = history, titles
        self.also_bought = _Entries(*tables.item_knn.entries(history, history_weights))
        first_recent = len(history) - len(recent_weights)
        labels, scores, owner = tables.transitions.entries(history[first_recent:], recent_weights)
        self.bought_after = _Entries(labels, scores, owner + first_recent)
        self.bought_with = _Entries(*_csr_entries(tables.cooccurrence, history))

    def _title(self, position: int | None) -> str | None:
        return None if position is None else self.titles[int(self.history[position])]

    def for_item(self, label: int, history_sims: np.ndarray | None) -> Evidence:
        """Evidence naming history items by title; an item is never explained by itself."""
        others = self.history != label
        similar = None
        if history_sims is not None and others.any():
            similar = int(np.argmax(np.where(others, history_sims, -np.inf)))
        return Evidence(
            also_bought=self._title(self.also_bought.strongest(label, self.history)),
            bought_after=self._title(self.bought_after.strongest(label, self.history)),
            bought_with=self._title(self.bought_with.strongest(label, self.history)),
            similar_to=self._title(similar),
        )

