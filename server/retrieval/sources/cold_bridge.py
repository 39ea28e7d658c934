"""Cold-item source: items nobody has interacted with yet, reached through their text.

Collaborative sources cannot find an item without interactions, and the content source
spends most of its budget on warm items, so a new item's only way in used to be a content
match against the history (cold items kept 38 % candidate recall against 67 % for warm
ones on Online Retail's cold-items protocol, docs/EVALUATION.md). The bridge carries the
collaborative expectation over to them: each cold item is linked to its nearest warm items
by content, and a request reaches the cold items linked to the warm items its item-kNN
neighbours score highest (the expectation head, export/neighbours.py). It is the
neighbourhood form of cold-start by content-to-collaborative mapping (CB2CF, Barkan et
al. 2019): "new, like what customers who bought yours buy".

`ColdBridge` is derived, never stored: `derive` when a bundle is loaded (and again after a
snapshot is restored), `link` for items upserted live. `links` rows are warm items, entries
the cold items most like them (int32 label, float16 cosine), so a request reads
EXPECTATION_HEAD rows. `floor` is, for every item, the cosine of its WARM_NEIGHBOURS-th
nearest warm item: the ranking feature `bridge_likeness` uses it to score every candidate,
warm or cold, as the bridge scores the cold ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from export.cpus import usable_cpus
from export.neighbours import NeighbourTable, expectation_head, top_n_table
from server.retrieval.backend import RetrievalBackend
from server.retrieval.sources.base import SourceContext, SourceList, best_allowed

WARM_NEIGHBOURS = 10  # warm items each cold item is linked to (a k-NN's usual k)
ROW_WIDTH = 16  # cold items kept per warm item (96 bytes an item): a head row's useful reach
_CHUNK = 1024  # items searched at once


def is_warm(item_knn: NeighbourTable, present: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Bool per label: a present item with item-to-item neighbours (collaborative evidence)."""
    labels = np.asarray(labels, np.int64)
    inside = (labels >= 0) & (labels < min(len(item_knn), len(present)))
    warm = np.zeros(labels.shape, bool)
    at = labels[inside]
    warm[inside] = present[at] & (item_knn.labels[at] >= 0).any(axis=-1)
    return warm


def _nearest_warm(index: RetrievalBackend, item_knn: NeighbourTable, labels: np.ndarray,
                  warm_share: float, threads: int = 1
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(warm label, item label, cosine) of each item's WARM_NEIGHBOURS nearest warm items
    (itself left out, cosines > 0), and each item's floor (the last one's cosine; inf: none)."""
    # enough results that about twice the wanted warm ones are among them
    fetch = int(min(index.size, np.ceil(2 * WARM_NEIGHBOURS / max(warm_share, 1e-3)) + 1))
    rows, owners, sims = [], [], []
    floor = np.full(len(labels), np.inf, np.float32)
    for lo in range(0, len(labels), _CHUNK):
        chunk = labels[lo:lo + _CHUNK]
        found, cosine = index.knn(index.vectors[chunk], fetch, threads=threads)
        keep = is_warm(item_knn, index.present, found) & (cosine > 0) & (found != chunk[:, None])
        keep &= np.cumsum(keep, axis=1) <= WARM_NEIGHBOURS
        owner = np.broadcast_to(chunk[:, None], found.shape)
        rows.append(found[keep]), owners.append(owner[keep]), sims.append(cosine[keep])
        kept = keep.any(axis=1)
        floor[lo:lo + _CHUNK][kept] = np.where(keep, cosine, np.inf)[kept].min(axis=1)
    if not rows:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32), floor
    return np.concatenate(rows), np.concatenate(owners), np.concatenate(sims), floor


@dataclass
class ColdBridge:
    links: NeighbourTable  # warm item -> the cold items most like it, best first
    floor: np.ndarray  # float32 [labels] cosine of each item's WARM_NEIGHBOURS-th nearest warm item
    warm_share: float = 1.0  # of the present items, when derived (sizes the searches of `link`)

    @classmethod
    def empty(cls, n_items: int = 0) -> "ColdBridge":
        return cls(NeighbourTable.empty(n_items, ROW_WIDTH), np.full(n_items, np.inf, np.float32))

    @classmethod
    def derive(cls, item_knn: NeighbourTable, index: RetrievalBackend) -> "ColdBridge":
        """Every present item's floor, and every present cold item linked (module docstring)."""
        n = len(item_knn)
        size = max(n, len(index.present))
        present = np.flatnonzero(index.present)
        warm = is_warm(item_knn, index.present, present)
        bridge = cls.empty(n)
        bridge.floor = np.full(size, np.inf, np.float32)
        if not warm.any() or n == 0:
            return bridge
        bridge.warm_share = float(warm.mean())
        # one query per item: on every usable core (about 210 us a query on one core at 200k items)
        rows, owners, sims, floor = _nearest_warm(index, item_knn, present, bridge.warm_share,
                                                  threads=usable_cpus())
        bridge.floor[present] = floor
        cold = ~is_warm(item_knn, index.present, owners)
        matrix = sp.csr_matrix((sims[cold].astype(np.float64), (rows[cold], owners[cold])),
                               shape=(n, size))
        bridge.links = top_n_table(matrix, ROW_WIDTH, normalise="none")
        return bridge

    def link(self, item_knn: NeighbourTable, index: RetrievalBackend, labels: np.ndarray) -> None:
        """Items just upserted (cold until they get interactions): their floor, and linked."""
        labels = np.asarray(labels, np.int64)
        if len(labels) == 0 or len(self.links) == 0:
            return
        rows, owners, sims, floor = _nearest_warm(index, item_knn, labels, self.warm_share)
        cold = ~is_warm(item_knn, index.present, owners)
        rows, owners, sims = rows[cold], owners[cold], sims[cold]
        if labels.max() >= len(self.floor):  # grown like the other tables: a quarter of headroom
            grown = np.full(int(labels.max()) + 1 + len(self.floor) // 4, np.inf, np.float32)
            grown[:len(self.floor)] = self.floor
            self.floor = grown
        self.floor[labels] = floor
        for source, target, cosine in zip(rows.tolist(), owners.tolist(), sims.tolist()):
            self.links.bump(source, target, cosine)


class ColdBridgeSource:
    name = "cold_bridge"

    def __init__(self, tables, index: RetrievalBackend) -> None:
        self.tables = tables  # FeatureTables: snapshot restores replace its cold_bridge
        self.index = index

    def active(self, context: SourceContext) -> bool:
        return len(context.history) > 0 and len(self.tables.cold_bridge.links) > 0

    def find(self, context: SourceContext, quota: int) -> SourceList:
        knn = context.neighbour_scores.get("item_knn")
        if knn is None:
            knn = self.tables.item_knn.aggregate(context.history, context.history_weights)
        # bounded as the features bound it, so they reuse it (rows past the links give nothing)
        context.expectation_head = expectation_head(knn, len(self.index.vectors))
        labels, scores = self.tables.cold_bridge.links.aggregate(*context.expectation_head)
        return best_allowed(labels, scores, context.gate, quota)
