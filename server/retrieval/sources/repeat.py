"""Buy-again source: the user's own recent history items, the most (and most recently)
chosen first.

In logs with repeat consumption (groceries, supplies, music) the next item is often one the
user chose before: on Online Retail 27 % of customers' last purchases repeat an earlier one,
and about a fifth of those repeats were among no other source's candidates. Whether repeats are wanted is
the ranker's call (history_count, history_recency and user_repeat_share are its features,
learned per bundle). Where the bundle's log shows nobody ever coming back to an item (its
repeat-rate table is all zero: ratings, one-off purchases, a bundle without interactions)
the source sits out, so such bundles rank exactly the candidates they did before it.
`exclude_interacted` requests never see them (the gate drops history items).
"""

from __future__ import annotations

import numpy as np

from server.retrieval.sources.base import SourceContext, SourceList, best_allowed


class RepeatSource:
    name = "repeat"

    def __init__(self, repeat_rate: np.ndarray) -> None:
        self.repeats_seen = bool(np.any(repeat_rate > 0))  # the log has repeat consumption

    def active(self, context: SourceContext) -> bool:
        return self.repeats_seen and len(context.history) > 0

    def find(self, context: SourceContext, quota: int) -> SourceList:
        labels, position = np.unique(context.history, return_inverse=True)
        scores = np.zeros(len(labels), np.float32)
        np.add.at(scores, position, context.history_weights)  # recency-weighted count
        return best_allowed(labels, scores, context.gate, quota)
