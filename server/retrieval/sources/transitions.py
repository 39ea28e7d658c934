"""Sequential source: what usually follows the last few history items ("often bought after X")."""

from __future__ import annotations

from export.neighbours import NeighbourTable
from server.retrieval.sources.base import SourceContext, SourceList, best_allowed


class TransitionSource:
    name = "transitions"

    def __init__(self, table: NeighbourTable) -> None:
        self.table = table

    def active(self, context: SourceContext) -> bool:
        return len(context.history) > 0 and len(self.table) > 0

    def find(self, context: SourceContext, quota: int) -> SourceList:
        recent = context.history[-len(context.recent_weights):]
        labels, scores = self.table.aggregate(recent, context.recent_weights)
        context.neighbour_scores[self.name] = (labels, scores)  # the transition feature reuses them
        return best_allowed(labels, scores, context.gate, quota)
