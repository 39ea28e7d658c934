"""Buy-again source: the user's own recent history items, the most (and most recently)
chosen first.

In logs with repeat consumption (groceries, supplies, music) the next item is often one the
user chose before: on Online Retail 27 % of customers' last purchases repeat an earlier one,
and about a fifth of those repeats were among no other source's candidates. Whether repeats are wanted is
the ranker's call (history_count, history_recency and user_repeat_share are its features,
learned per bundle): on data where nobody repeats, the ranker learns to push these down.
`exclude_interacted` requests never see them (the gate drops history items).
"""

from __future__ import annotations

import numpy as np

from server.retrieval.sources.base import SourceContext, SourceList, best_allowed


class RepeatSource:
    name = "repeat"

    def active(self, context: SourceContext) -> bool:
        return len(context.history) > 0

    def find(self, context: SourceContext, quota: int) -> SourceList:
        labels, position = np.unique(context.history, return_inverse=True)
        scores = np.zeros(len(labels), np.float32)
        np.add.at(scores, position, context.history_weights)  # recency-weighted count
        return best_allowed(labels, scores, context.gate, quota)
