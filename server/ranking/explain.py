"""Which history item stands behind a recommended item, for each kind of evidence."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from export.neighbours import NeighbourTable
from server.ranking.scorer import Evidence


def _strongest_row(table: NeighbourTable, rows: np.ndarray, weights: np.ndarray, label: int) -> int | None:
    """Position in `rows` whose (weighted) neighbour entry for `label` is largest."""
    labels, scores, owner = table.entries(rows, weights)
    hit = labels == label
    if not hit.any():
        return None
    return int(owner[hit][np.argmax(scores[hit])])


def _strongest_cooccurring(matrix: sp.csr_matrix, history: np.ndarray, label: int) -> int | None:
    """Position in `history` whose co-occurrence row holds `label` most strongly (CSR arrays
    read directly: one vectorised pass over the history's rows)."""
    rows = history[history < matrix.shape[0]]
    positions = np.flatnonzero(history < matrix.shape[0])
    starts, lengths = matrix.indptr[rows], np.diff(matrix.indptr)[rows]
    total = int(lengths.sum())
    if total == 0:
        return None
    offsets = np.repeat(starts - np.r_[0, np.cumsum(lengths)[:-1]], lengths) + np.arange(total)
    hit = np.flatnonzero(matrix.indices[offsets] == label)
    if len(hit) == 0:
        return None
    best = hit[np.argmax(matrix.data[offsets[hit]])]
    return int(positions[np.searchsorted(np.cumsum(lengths), best, side="right")])


def evidence_for(label: int, *, history: np.ndarray, history_weights: np.ndarray,
                 recent_weights: np.ndarray, history_sims: np.ndarray | None,
                 tables, titles: list[str]) -> Evidence:
    """Evidence naming history items by title; an item is never explained by itself."""
    others = history != label
    if not others.any():
        return Evidence()
    weights = np.where(others, history_weights, 0.0).astype(np.float32)
    recent = history[-len(recent_weights):] if len(recent_weights) else history[:0]
    recent_w = np.where(recent != label, recent_weights, 0.0).astype(np.float32)

    def title(position: int | None, base: int = 0) -> str | None:
        return None if position is None else titles[int(history[base + position])]

    similar = None
    if history_sims is not None:
        similar = int(np.argmax(np.where(others, history_sims, -np.inf)))
    return Evidence(
        also_bought=title(_strongest_row(tables.item_knn, history, weights, label)),
        bought_after=title(_strongest_row(tables.transitions, recent, recent_w, label),
                           base=len(history) - len(recent)),
        bought_with=title(_with_mask(tables.cooccurrence, history, others, label)),
        similar_to=title(similar),
    )


def _with_mask(matrix: sp.csr_matrix, history: np.ndarray, others: np.ndarray, label: int) -> int | None:
    """_strongest_cooccurring over the history items that are not the item itself, as a
    position in the full history."""
    positions = np.flatnonzero(others)
    found = _strongest_cooccurring(matrix, history[positions], label)
    return None if found is None else int(positions[found])
