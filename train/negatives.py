"""Hard negatives mined with the current encoder: items it ranks near the query that are
not the answer.

The very nearest items are skipped: in a gift shop the closest item to "red retrospot
bag" is often "jumbo bag red retrospot", which the same customer may well buy next - a
false negative would teach the model to push it away. A negative is drawn from the ranks
[skip, skip + span) instead, among items the model may know at training time (`pool`:
items created before the split), never the target or an item of the query's window.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from train.pairs import Pair


def mine_hard_negatives(
    queries: np.ndarray,
    items: np.ndarray,
    pairs: Sequence[Pair],
    pool: np.ndarray,
    *,
    skip: int,
    span: int,
    rng: np.random.Generator,
) -> list[int]:
    """One hard negative item label per pair (queries: [n, dim] vectors of the pairs'
    query texts; items: [n_items, dim] catalog vectors; pool: bool [n_items])."""
    if not pool.any():
        raise ValueError("no item is eligible as a hard negative")
    depth = min(skip + span, int(pool.sum()))
    negatives: list[int] = []
    for begin in range(0, len(pairs), 256):
        scores = queries[begin: begin + 256] @ items.T
        scores[:, ~pool] = -np.inf
        for row, pair in enumerate(pairs[begin: begin + 256]):
            scores[row, [pair.target, *pair.window]] = -np.inf
            eligible = int(np.isfinite(scores[row]).sum())
            if eligible == 0:  # a pool of only this pair's items: any other item will do
                negatives.append(int(rng.choice(np.flatnonzero(np.arange(len(items)) != pair.target))))
                continue
            top = np.argpartition(-scores[row], min(depth, eligible) - 1)[: min(depth, eligible)]
            top = top[np.argsort(-scores[row, top], kind="stable")]
            band = top[skip:] if len(top) > skip else top[-1:]
            negatives.append(int(rng.choice(band)))
    return negatives
