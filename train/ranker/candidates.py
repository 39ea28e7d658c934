"""The engine's own candidates for a history, with their feature rows.

This is `RecommendationEngine.candidates()` then `.score()` (the steps `recommend` runs)
for a history-only request, kept whole: the ranker needs every candidate's row, not just
the scored top k. tests/train/test_ranker.py checks that ordering these rows by the
engine's scores gives exactly the engine's answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from server.engine import RecommendationEngine
from server.requests import RecommendQuery


@dataclass
class CandidateRows:
    labels: np.ndarray    # int64 [C] candidate item labels
    features: np.ndarray  # float32 [C, len(FEATURES)]
    sources: np.ndarray   # int32 [C, len(SOURCE_NAMES)] rank in each source's list, -1 = not found


def candidate_rows(engine: RecommendationEngine, history: np.ndarray, k: int) -> CandidateRows:
    """Candidates of a history-only request (the newest items the engine uses) and their rows."""
    ids = engine.bundle.catalog.item_ids
    recent = history[-engine.bundle.users.history_length:]
    request = RecommendQuery(history=tuple(ids[int(i)] for i in recent), k=k)
    scored = engine.score(engine.candidates(request))
    return CandidateRows(scored.candidates.labels, scored.features, scored.candidates.merged.ranks)
