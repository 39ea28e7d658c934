"""The held-out probe the release compares bundles on: each sampled user's next new item.

From the release's interaction log, per user: events in time order (same-timestamp events, the
items of one invoice, shuffled by a seeded key so the order is neither the file's nor chance,
DESIGN.md "Known traps"), the *target* is the last item the user had not interacted with
before, and the *history* is the distinct items before it (most recent last). Users are
sampled with a fixed seed, so the same inputs always give the same probe.

Only positive events on items of the candidate's catalog are used: the probe asks how well
each bundle retrieves items the new release will serve.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

DEFAULT_PROBE_USERS = 2000
DEFAULT_HISTORY_LENGTH = 20
NEGATIVE_EVENTS = frozenset({"dislike", "not_interested"})


@dataclass(frozen=True)
class ProbeCase:
    user_id: str
    history: tuple[str, ...]
    """Distinct items before the target, oldest first."""
    target: str
    """The held-out next new item."""


@dataclass(frozen=True)
class HeldOutProbe:
    cases: tuple[ProbeCase, ...]
    eligible_users: int
    """Users with a target and at least one history item (cases are sampled from them)."""
    seed: int
    source: str

    def describe(self) -> dict:
        return {"source": self.source, "cases": len(self.cases),
                "eligible_users": self.eligible_users, "seed": self.seed}


def _tie_key(seed: int, user: str, item: str, timestamp: float) -> bytes:
    return hashlib.blake2b(f"{seed}\x1f{user}\x1f{item}\x1f{timestamp!r}".encode(),
                           digest_size=8).digest()


def held_out_case(user_id: str, items_in_order: list[str], history_length: int) -> ProbeCase | None:
    """The user's last new item as target and the distinct items before it, or None."""
    for position in range(len(items_in_order) - 1, 0, -1):
        target, before = items_in_order[position], items_in_order[:position]
        if target in before:
            continue  # a repeat purchase says nothing about retrieval
        history = list(dict.fromkeys(reversed(before)))[:history_length]  # most recent first
        return ProbeCase(user_id, tuple(reversed(history)), target)
    return None


def probe_from_events(events: Iterable[tuple[str, str, float]], *, users: int = DEFAULT_PROBE_USERS,
                      history_length: int = DEFAULT_HISTORY_LENGTH, seed: int = 0,
                      source: str = "") -> HeldOutProbe:
    """The probe from (user_id, item_id, timestamp) events, in any order."""
    by_user: dict[str, list[tuple[float, bytes, str]]] = defaultdict(list)
    for user, item, timestamp in events:
        by_user[user].append((timestamp, _tie_key(seed, user, item, timestamp), item))
    cases = []
    for user in sorted(by_user):
        ordered = [item for _, _, item in sorted(by_user[user])]
        case = held_out_case(user, ordered, history_length)
        if case is not None:
            cases.append(case)
    chosen = cases
    if len(cases) > users:
        picks = np.random.default_rng(seed).choice(len(cases), size=users, replace=False)
        chosen = [cases[i] for i in sorted(picks)]
    return HeldOutProbe(tuple(chosen), len(cases), seed, source)


def read_probe(interactions: str | Path, known_items: set[str], *, columns=None,
               users: int = DEFAULT_PROBE_USERS, history_length: int = DEFAULT_HISTORY_LENGTH,
               seed: int = 0) -> HeldOutProbe:
    """The probe from an interaction file (any format `recserve build` reads)."""
    from export.catalog import ValidationReport, read_interactions

    report = ValidationReport(str(interactions))
    events = ((e.user_id, e.item_id, e.timestamp)
              for e in read_interactions(interactions, columns, report)
              if e.item_id in known_items and e.event not in NEGATIVE_EVENTS and e.weight > 0)
    return probe_from_events(events, users=users, history_length=history_length, seed=seed,
                             source=str(interactions))
