"""LRU cache of query embeddings (repeated queries skip inference entirely)."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np


class EmbeddingCache:
    """text -> embedding, least recently used evicted first; size 0 disables it."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, text: str) -> np.ndarray | None:
        vector = self._entries.get(text)
        if vector is not None:
            self._entries.move_to_end(text)
        return vector

    def put(self, text: str, vector: np.ndarray) -> None:
        if self.max_entries <= 0:
            return
        self._entries[text] = vector
        self._entries.move_to_end(text)
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
