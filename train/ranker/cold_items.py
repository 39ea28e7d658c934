"""Cold-item copies of the ranker's training groups, so trees rank new items on their content.

A tree ranker fitted only on the interaction log learns "no interactions -> not the next
item": every candidate it ever saw without co-occurrence, popularity or neighbour scores was
a negative. Served, it then buries every new item however well its text matches (measured:
cold items kept 4 % of warm items' Recall@50 with trees, docs/EVALUATION.md). The remedy of
DropoutNet (Volkovs et al., 2017) is to show the model the cold case during training: each
group is added once more with a random half of its rows (positives and negatives alike)
given the features an item without interactions has (INTERACTION_FEATURES at 0, found by the
content source only). Because positives and negatives are made cold at the same rate,
coldness itself carries no evidence either way; among cold rows the content features decide.
The rate is the method's (dropout's usual 0.5), not fitted to any data set.
"""

from __future__ import annotations

import numpy as np

from server.ranking.features import COLUMN, INTERACTION_COLUMNS, RANKED_SOURCES
from train.ranker.fit import CandidateSet

COLD_SHARE = 0.5
_RANKS = np.asarray([COLUMN[f"rank_{name}"] for name in RANKED_SOURCES])


def as_cold(rows: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """A copy of `rows` whose `chosen` rows look like items nobody interacted with."""
    out = rows.copy()
    cold = out[chosen]
    cold[:, INTERACTION_COLUMNS] = 0.0
    cold[:, COLUMN["source_count"]] = (cold[:, _RANKS] > 0).sum(axis=1)  # only content is left
    out[chosen] = cold
    return out


def cold_copies(candidates: CandidateSet, seed: int, share: float = COLD_SHARE) -> CandidateSet:
    """Each group again, with a seeded `share` of its rows made cold (positives included)."""
    rng = np.random.default_rng(seed)
    features = [as_cold(rows, rng.random(len(rows)) < share) for rows in candidates.features]
    return CandidateSet(features, [p.copy() for p in candidates.positive])


def with_cold_copies(candidates: CandidateSet, seed: int) -> CandidateSet:
    """The groups as logged, then their cold copies."""
    copies = cold_copies(candidates, seed)
    return CandidateSet(candidates.features + copies.features, candidates.positive + copies.positive)
