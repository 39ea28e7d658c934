"""Cold-item source: items nobody has interacted with yet, reached through their text.

Collaborative sources cannot find an item without interactions, and the content source
spends most of its budget on warm items, so a new item's only way in used to be a content
match against the history (cold items kept 37 % candidate recall against 67 % for warm
ones on Online Retail's cold-items protocol, docs/EVALUATION.md). The bridge carries the
collaborative expectation over to them: each cold item is linked to its nearest warm items
by content, and a request reaches the cold items linked to the warm items its item-kNN
neighbours score highest (the same head as the `neighbour_likeness` feature). It is the
neighbourhood form of cold-start by content-to-collaborative mapping (CB2CF, Barkan et
al. 2019): "new, like what customers who bought yours buy".

The table is derived, never stored: `bridge_table` links every cold item when a bundle is
loaded (and again after a snapshot is restored), `link_items` links items upserted live.
Rows are warm items, entries the cold items most like them (int32 label, float16 cosine),
so a request reads LIKENESS_ITEMS rows.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from export.neighbours import NeighbourTable, top_n_table
from server.ranking.features import expectation_head
from server.retrieval.backend import RetrievalBackend
from server.retrieval.sources.base import SourceContext, SourceList, best_allowed

WARM_NEIGHBOURS = 10  # warm items each cold item is linked to (a k-NN's usual k)
ROW_WIDTH = 16  # cold items kept per warm item (96 bytes an item): a head row's useful reach
_CHUNK = 1024  # cold items searched at once


def warm_items(item_knn: NeighbourTable, present: np.ndarray) -> np.ndarray:
    """Bool over labels: present items with item-to-item neighbours (collaborative evidence)."""
    warm = np.zeros(len(present), bool)
    rows = min(len(item_knn), len(present))
    warm[:rows] = (item_knn.labels[:rows] >= 0).any(axis=1) & present[:rows]
    return warm


def _links(index: RetrievalBackend, warm: np.ndarray, cold: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(warm label, cold label, cosine) of each cold item's WARM_NEIGHBOURS nearest warm items."""
    warm_share = max(warm.sum() / max(index.size, 1), 1e-3)
    # enough results that about twice the wanted warm ones are among them
    fetch = int(min(index.size, np.ceil(2 * WARM_NEIGHBOURS / warm_share) + 1))
    rows, cols, sims = [], [], []
    for lo in range(0, len(cold), _CHUNK):
        chunk = cold[lo:lo + _CHUNK]
        found, cosine = index.knn(index.vectors[chunk], fetch)
        inside = (found >= 0) & (found < len(warm))
        keep = inside & warm[np.where(inside, found, 0)] & (cosine > 0)
        rank = np.cumsum(keep, axis=1)
        keep &= rank <= WARM_NEIGHBOURS
        owner = np.broadcast_to(chunk[:, None], found.shape)
        rows.append(found[keep]), cols.append(owner[keep]), sims.append(cosine[keep])
    if not rows:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(sims)


def bridge_table(item_knn: NeighbourTable, index: RetrievalBackend) -> NeighbourTable:
    """Every present cold item linked from its nearest warm items (module docstring)."""
    warm = warm_items(item_knn, index.present)
    cold = np.flatnonzero(index.present & ~warm)
    n = len(item_knn)
    if len(cold) == 0 or not warm.any() or n == 0:
        return NeighbourTable.empty(n, ROW_WIDTH)
    rows, cols, sims = _links(index, warm, cold)
    size = max(n, len(index.present))
    matrix = sp.csr_matrix((sims.astype(np.float64), (rows, cols)), shape=(n, size))
    return top_n_table(matrix, ROW_WIDTH, normalise="none")


def link_items(table: NeighbourTable, item_knn: NeighbourTable, index: RetrievalBackend,
               labels: np.ndarray) -> None:
    """Link items just upserted (cold until they get interactions) into the bridge."""
    cold = np.asarray(labels, np.int64)
    warm = warm_items(item_knn, index.present)
    cold = cold[(cold >= len(warm)) | ~warm[np.minimum(cold, len(warm) - 1)]] if len(warm) else cold[:0]
    if len(cold) == 0 or not warm.any():
        return
    for source, target, cosine in zip(*(a.tolist() for a in _links(index, warm, cold))):
        table.bump(source, target, cosine)


class ColdBridgeSource:
    name = "cold_bridge"

    def __init__(self, tables) -> None:
        self.tables = tables  # FeatureTables: live writes and snapshot restores replace its tables

    def active(self, context: SourceContext) -> bool:
        return len(context.history) > 0 and len(self.tables.cold_bridge) > 0

    def find(self, context: SourceContext, quota: int) -> SourceList:
        knn = context.neighbour_scores.get("item_knn")
        if knn is None:
            knn = self.tables.item_knn.aggregate(context.history, context.history_weights)
        head, weights = expectation_head(knn, len(self.tables.cold_bridge))
        labels, scores = self.tables.cold_bridge.aggregate(head, weights)
        return best_allowed(labels, scores, context.gate, quota)
