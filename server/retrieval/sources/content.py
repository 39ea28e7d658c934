"""Content source: HNSW k-NN of each interest (query text and history clusters), filters kept."""

from __future__ import annotations

import numpy as np

from server.retrieval.retriever import Retriever
from server.retrieval.sources.base import SourceContext, SourceList


class ContentSource:
    name = "content"

    def __init__(self, retriever: Retriever) -> None:
        self.retriever = retriever

    def active(self, context: SourceContext) -> bool:
        return bool(context.interests)

    def find(self, context: SourceContext, quota: int) -> SourceList:
        found = self.retriever.retrieve(context.interests, min(context.k, quota), context.gate.filter,
                                        total=quota, exact_scores=False)
        order = np.lexsort((found.labels, -found.scores))
        return SourceList(found.labels[order], found.scores[order])
