"""Compact top-N neighbour tables: item-to-item CF and sequential transitions.

A `NeighbourTable` keeps, per item, its N strongest neighbours as int32 labels (-1 = empty
slot) and float16 scores in [0, 1], best first: 6 bytes a neighbour, so N = 40 in both
tables is 480 bytes an item (480 MB at 1M items), whatever the number of users.

- item-to-item ("customers who bought X also bought this"): cosine between items' user
  sets, users' recent distinct items only (a few very long histories would otherwise cost
  quadratic time and dominate every item).
- transitions ("often bought after X"): item j at distance d <= window after item i in a
  user's sequence adds 1/d to T[i, j]; each row is divided by its total, so the score is
  the share of what follows i that is j.

Live interactions nudge both (`bump`); a pair not yet in a row accumulates aside until it
is stronger than the row's weakest neighbour, then takes its slot. Writes are single
element stores, so a concurrent reader sees either the old or the new value of a slot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

_ROW_CHUNK = 4096  # items whose similarity rows are computed at once (bounds build memory)
EXPECTATION_HEAD = 16  # items of an aggregated item-kNN list taken as "what CF expects next"


@dataclass
class NeighbourTable:
    labels: np.ndarray  # int32 [n, N], -1 = empty
    scores: np.ndarray  # float16 [n, N], best first
    # live strength of pairs not (yet) in their row; bounded, see MAX_PENDING
    pending: dict[tuple[int, int], float] = field(default_factory=dict, repr=False, compare=False)
    MAX_PENDING = 1_000_000  # weak pairs forgotten past this (about 100 MB of dict)

    @classmethod
    def empty(cls, n_items: int, width: int) -> "NeighbourTable":
        return cls(np.full((n_items, width), -1, np.int32), np.zeros((n_items, width), np.float16))

    @property
    def width(self) -> int:
        return self.labels.shape[1]

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def nbytes(self) -> int:
        return self.labels.nbytes + self.scores.nbytes

    def save(self, directory: Path, name: str) -> dict[str, str]:
        np.save(directory / f"{name}_labels.npy", self.labels)
        np.save(directory / f"{name}_scores.npy", self.scores)
        return {f"{name}_labels.npy": "int32 [n_items, N] neighbour labels, best first, -1 empty",
                f"{name}_scores.npy": "float16 [n_items, N] neighbour scores in 0..1"}

    @classmethod
    def load(cls, directory: Path, name: str) -> "NeighbourTable":
        labels = np.load(directory / f"{name}_labels.npy", allow_pickle=False)
        scores = np.load(directory / f"{name}_scores.npy", allow_pickle=False)
        if labels.shape != scores.shape or labels.ndim != 2:
            raise ValueError(f"{name}: labels {labels.shape} and scores {scores.shape} disagree")
        return cls(labels.astype(np.int32, copy=False), scores.astype(np.float16, copy=False))

    def entries(self, rows: np.ndarray, row_weights: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(neighbour labels, score * row weight, position in `rows` of the row it came from)
        of the given rows' filled slots; rows outside the table (items added live) give none."""
        rows = np.asarray(rows, np.int64)
        inside = (rows >= 0) & (rows < len(self))
        if not inside.all():
            rows, row_weights = rows[inside], row_weights[inside]
        labels = self.labels[rows]
        scores = self.scores[rows].astype(np.float32) * row_weights[:, None]
        filled = labels >= 0
        owner = np.flatnonzero(inside)[np.nonzero(filled)[0]]
        return labels[filled].astype(np.int64), scores[filled], owner

    def aggregate(self, rows: np.ndarray, row_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(sorted unique neighbour labels, summed weight x score) over the given rows."""
        labels, scores, _ = self.entries(rows, row_weights)
        if len(labels) == 0:
            return labels, scores
        unique, inverse = np.unique(labels, return_inverse=True)
        return unique, np.bincount(inverse, weights=scores, minlength=len(unique)).astype(np.float32)

    def bump(self, source: int, target: int, amount: float) -> None:
        """Strengthen source -> target by amount (capped at 1); live interactions call this."""
        if not 0 <= source < len(self) or source == target or amount <= 0:
            return
        row_labels, row_scores = self.labels[source], self.scores[source]
        hit = np.flatnonzero(row_labels == target)
        if len(hit):
            slot = int(hit[0])
            value = min(1.0, float(row_scores[slot]) + amount)
        else:
            slot = int(np.argmin(np.where(row_labels < 0, -1.0, row_scores.astype(np.float32))))
            value = min(1.0, self.pending.pop((source, target), 0.0) + amount)
            if row_labels[slot] >= 0 and row_scores[slot] >= value:
                if len(self.pending) >= self.MAX_PENDING:
                    self.pending.clear()
                self.pending[(source, target)] = value  # weaker than every kept neighbour, so far
                return
            row_labels[slot] = target
        row_scores[slot] = value


def expectation_head(aggregated: tuple[np.ndarray, np.ndarray], items: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The EXPECTATION_HEAD labels (below `items`) an aggregated neighbour list scores highest,
    with each one's score over the top one (empty when there is no positive score)."""
    labels, scores = aggregated
    if len(labels) > EXPECTATION_HEAD:
        head = np.argpartition(-scores, EXPECTATION_HEAD - 1)[:EXPECTATION_HEAD]
        labels, scores = labels[head], scores[head]
    inside = labels < items
    labels, scores = labels[inside].astype(np.int64), scores[inside]
    if len(labels) == 0 or scores.max() <= 0:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    return labels, (scores / scores.max()).astype(np.float32)


def top_n_table(matrix: sp.csr_matrix, width: int, normalise: str,
                first_label: int = 0) -> NeighbourTable:
    """Each row's `width` largest entries (ties by label); rows scaled by their "max", their
    "sum", or kept as they are ("none", values already in 0..1).

    Row r describes item first_label + r; its own entry (the diagonal) is dropped.
    """
    matrix = matrix.tocsr()
    matrix.sum_duplicates()
    n = matrix.shape[0]
    table = NeighbourTable.empty(n, width)
    rows = np.repeat(np.arange(n), np.diff(matrix.indptr))
    useful = (matrix.indices != rows + first_label) & (matrix.data > 0)
    rows, cols, data = rows[useful], matrix.indices[useful], matrix.data[useful].astype(np.float64)
    if len(rows) == 0:
        return table
    if normalise == "sum":
        totals = np.bincount(rows, weights=data, minlength=n)
        data = data / totals[rows]
    order = np.lexsort((cols, -data, rows))
    starts = np.searchsorted(rows[order], np.arange(n))
    rank = np.arange(len(order)) - starts[rows[order]]
    keep = order[rank < width]
    kept_rows, kept_rank = rows[keep], rank[rank < width]
    values = data[keep]
    if normalise == "max":
        row_max = np.zeros(n)
        np.maximum.at(row_max, kept_rows, values)
        values = values / row_max[kept_rows]
    table.labels[kept_rows, kept_rank] = cols[keep]
    table.scores[kept_rows, kept_rank] = np.clip(values, 0.0, 1.0)
    return table


def item_knn_table(users: np.ndarray, labels: np.ndarray, n_items: int, *, width: int,
                   per_user: int) -> NeighbourTable:
    """Cosine item-item similarity over users (binary), users' last per_user distinct items.

    `users`/`labels` are sorted by (user, time); the newest events of each user are kept.
    """
    if len(users) == 0:
        return NeighbourTable.empty(n_items, width)
    # newest first within each user, so `unique` keeps each item's latest position
    reverse = np.arange(len(users))[::-1]
    pairs = users[reverse].astype(np.int64) * n_items + labels[reverse]
    _, first = np.unique(pairs, return_index=True)
    keep = reverse[np.sort(first)]
    u, items = users[keep], labels[keep]
    # distinct items in newest-first order per user: keep the first per_user of each user
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    position = np.arange(len(u)) - np.repeat(starts, np.diff(np.r_[starts, len(u)]))
    recent = position < per_user
    u, items = u[recent], items[recent]
    x = sp.csr_matrix((np.ones(len(u), np.float32), (u, items)), shape=(int(u.max()) + 1, n_items))
    item_users = x.T.tocsr()
    norms = np.sqrt(np.asarray(item_users.sum(axis=1)).ravel())
    table = NeighbourTable.empty(n_items, width)
    for lo in range(0, n_items, _ROW_CHUNK):
        hi = min(n_items, lo + _ROW_CHUNK)
        counts = (item_users[lo:hi] @ x).tocsr()  # [chunk, n_items] co-interacting users
        counts = sp.diags(1.0 / np.maximum(norms[lo:hi], 1e-12)) @ counts
        counts = (counts @ sp.diags(1.0 / np.maximum(norms, 1e-12))).tocsr()
        part = top_n_table(counts, width, normalise="none", first_label=lo)
        table.labels[lo:hi], table.scores[lo:hi] = part.labels, part.scores
    return table


def transition_table(users: np.ndarray, labels: np.ndarray, n_items: int, *, width: int,
                     window: int) -> NeighbourTable:
    """Forward transitions within `window` steps, 1/distance each, rows as shares of their total."""
    total = sp.csr_matrix((n_items, n_items), dtype=np.float64)
    for distance in range(1, window + 1):
        same = users[:-distance] == users[distance:]
        src, dst = labels[:-distance][same], labels[distance:][same]
        differ = src != dst
        weight = np.full(int(differ.sum()), 1.0 / distance)
        total = total + sp.csr_matrix((weight, (src[differ], dst[differ])), shape=(n_items, n_items))
    return top_n_table(total, width, normalise="sum")
