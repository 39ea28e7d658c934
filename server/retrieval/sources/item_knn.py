"""Item-to-item collaborative source: neighbours of the recent history in the bundle's
precomputed item-kNN table ("customers who bought X also bought this")."""

from __future__ import annotations

from export.neighbours import NeighbourTable
from server.retrieval.sources.base import SourceContext, SourceList, best_allowed


class ItemKnnSource:
    name = "item_knn"

    def __init__(self, table: NeighbourTable) -> None:
        self.table = table

    def active(self, context: SourceContext) -> bool:
        return len(context.history) > 0 and len(self.table) > 0

    def find(self, context: SourceContext, quota: int) -> SourceList:
        labels, scores = self.table.aggregate(context.history, context.history_weights)
        context.neighbour_scores[self.name] = (labels, scores)  # the item_knn feature reuses them
        return best_allowed(labels, scores, context.gate, quota)
