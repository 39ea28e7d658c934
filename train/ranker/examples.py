"""Ranker examples from time slices: tables from the past, fit on a window, validate later.

Events before `fit_start` build the interaction tables (popularity, co-occurrence) the
features read, so a positive is never explained by its own event. Each event in
[fit_start, validation_start) is a fit example, each event from validation_start on a
validation example: the history is everything the user did before it, the target the item.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from train.data import EventSequences


@dataclass
class NextItemExample:
    history: np.ndarray  # item labels, oldest..newest
    target: int


def window_examples(events: EventSequences, start: float, end: float, per_user: int,
                    limit: int, seed: int, session_start_share: float = 0.0) -> list[NextItemExample]:
    """Up to per_user events per user with start <= time < end (seeded choice), at most limit.

    session_start_share: the share of examples asked at the start of their moment, i.e.
    without the events that share the target's timestamp (the rest of its basket) in the
    history: the first item of a new basket rather than the next item of one begun."""
    rng = np.random.default_rng(seed)
    out = []
    for u in range(len(events.user_ids)):
        labels, stamps = events.user_events(u)
        inside = np.flatnonzero((stamps >= start) & (stamps < end))
        inside = inside[inside > 0]  # a history is needed to retrieve anything
        if len(inside) > per_user:
            inside = np.sort(rng.choice(inside, size=per_user, replace=False))
        for i in inside:
            cut = i
            if session_start_share and rng.random() < session_start_share:
                cut = int(np.searchsorted(stamps, stamps[i], side="left"))
            if cut > 0:
                out.append(NextItemExample(labels[:cut].copy(), int(labels[i])))
    if len(out) > limit:
        keep = np.sort(rng.choice(len(out), size=limit, replace=False))
        out = [out[i] for i in keep]
    return out
