"""Batches for in-batch-negative training: no target item twice in one batch.

With in-batch negatives every other pair's positive is a negative for this pair; if two
pairs of a batch share their target (a popular item), each is pushed away from its own
answer. Batches are filled greedily from the shuffled pairs, deferring a pair whose target
is already in the batch (what sentence-transformers' NoDuplicatesBatchSampler does).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from train.pairs import Pair


def distinct_target_batches(pairs: Sequence[Pair], batch_size: int) -> list[list[Pair]]:
    """Consecutive batches of at most batch_size pairs with pairwise distinct targets.

    Every pair is used, except a last batch of one pair (it has nothing to contrast with).
    """
    if batch_size < 2:
        raise ValueError("in-batch negatives need a batch size of at least 2")
    # An insertion-ordered dict: removal is O(1) and a scan only visits pairs still waiting,
    # so the cost is the pairs used plus the few deferred duplicates, not quadratic.
    remaining = dict(enumerate(pairs))
    batches: list[list[Pair]] = []
    while remaining:
        chosen: list[int] = []
        targets: set[int] = set()
        for position, pair in remaining.items():
            if pair.target not in targets:
                chosen.append(position)
                targets.add(pair.target)
                if len(chosen) == batch_size:
                    break
        if len(chosen) < 2:
            break
        batches.append([remaining.pop(position) for position in chosen])
    return batches


def length_grouped_batches(pairs: Sequence[Pair], lengths: Sequence[int], batch_size: int,
                           seed: int | Sequence[int], window_batches: int = 32) -> list[list[Pair]]:
    """Distinct-target batches of pairs whose queries are about as long, in a seeded order.

    A batch is padded to its longest query, so one 5-item history among 31 single-item
    queries makes the whole batch cost what 32 histories cost. As transformers' group_by_length
    does: the pairs, in their (shuffled) order, are cut into windows of `window_batches`
    batches, each window sorted by query length and batched, then all batches shuffled.
    """
    window = batch_size * window_batches
    batches: list[list[Pair]] = []
    for start in range(0, len(pairs), window):
        chunk = sorted(range(start, min(start + window, len(pairs))), key=lambda i: lengths[i])
        batches += distinct_target_batches([pairs[i] for i in chunk], batch_size)
    order = np.random.default_rng(seed).permutation(len(batches))
    return [batches[i] for i in order]
