"""Merging source lists into one de-duplicated candidate set with provenance.

Each candidate keeps, per source (SOURCE_NAMES order), its rank in that source's list
(0 = best, -1 = not found there) and the source's score for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from server.retrieval.sources.base import SOURCE_NAMES, SourceList

SOURCE_COLUMN = {name: i for i, name in enumerate(SOURCE_NAMES)}


@dataclass
class MergedCandidates:
    labels: np.ndarray  # int64 [C], unique
    ranks: np.ndarray  # int32 [C, len(SOURCE_NAMES)], -1 = not found by that source
    scores: np.ndarray  # float32 [C, len(SOURCE_NAMES)], 0 = not found

    def __len__(self) -> int:
        return len(self.labels)

    def sources_of(self, position: int) -> list[str]:
        """Names of the sources that found candidate `position`, best rank first."""
        row = self.ranks[position].tolist()  # a few columns: plain Python is 4x numpy's calls here
        return [SOURCE_NAMES[i] for i in sorted((i for i, r in enumerate(row) if r >= 0), key=row.__getitem__)]

    def count_by_source(self) -> dict[str, int]:
        return {name: int((self.ranks[:, i] >= 0).sum()) for i, name in enumerate(SOURCE_NAMES)}


def merge(lists: dict[str, SourceList]) -> MergedCandidates:
    present = [(name, found) for name, found in lists.items() if len(found)]
    if not present:
        empty = np.empty((0, len(SOURCE_NAMES)))
        return MergedCandidates(np.empty(0, np.int64), empty.astype(np.int32), empty.astype(np.float32))
    if len(present) == 1:  # one source: its labels are unique already
        labels, inverse = present[0][1].labels, np.arange(len(present[0][1]))
    else:
        labels, inverse = np.unique(np.concatenate([f.labels for _, f in present]), return_inverse=True)
    ranks = np.full((len(labels), len(SOURCE_NAMES)), -1, np.int32)
    scores = np.zeros((len(labels), len(SOURCE_NAMES)), np.float32)
    start = 0
    for name, found in present:
        rows = inverse[start:start + len(found)]
        column = SOURCE_COLUMN[name]
        ranks[rows, column] = np.arange(len(found), dtype=np.int32)
        scores[rows, column] = found.scores
        start += len(found)
    return MergedCandidates(labels, ranks, scores)


def quotas(total: int, shares: dict[str, float], active: list[str], k: int) -> dict[str, int]:
    """Per active source, its share of `total`; the content source, when active, gets at
    least k (it can always fill a filtered request). A source with nothing to say for the
    request (no history: no item-kNN) leaves its share unused, so query-only and new-user
    requests rank fewer candidates and cost less."""
    out = {name: int(np.ceil(total * shares[name])) for name in active if shares[name] > 0}
    if "content" in out:
        out["content"] = max(out["content"], k)
    return out
