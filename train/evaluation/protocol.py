"""Evaluation protocols: which events a model may learn from, and the held-out cases.

Per-user sequences come from train/data.py (time order, same-timestamp events in the
seeded order - never file order, or results are inflated).

- leave-last-out: each user's last event is the target, everything before it the history;
  the training events are all but those last events.
- time-split: events before `cutoff` are training events; each user with history before
  the cutoff and an event after it gives one case, the first event after the cutoff.
- cold-items: leave-last-out, and a seeded share of the items is new to the system: none
  of their events is a training event or part of a history (they exist in the catalog
  only), so about that share of the targets is a true cold-start item.

Groups over the cases: `warm_items` (the target occurs in the training events),
`cold_items` (it never does: collaborative methods score zero there by construction) and
`new_users` (one or two history events).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from train.data import EventSequences

NEW_USER_MAX_EVENTS = 2


@dataclass
class EvalCases:
    users: list[int]                # user index into EventSequences.user_ids
    histories: list[np.ndarray]     # item labels, oldest..newest
    targets: np.ndarray             # int64 item label per case
    training_events: np.ndarray     # bool over EventSequences events: what models may learn
    groups: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.targets)


def _finish(events: EventSequences, users, histories, targets, training) -> EvalCases:
    targets_a = np.asarray(targets, dtype=np.int64)
    seen = np.zeros(int(events.labels.max()) + 1 if len(events.labels) else 0, dtype=bool)
    seen[events.labels[training]] = True
    warm = seen[targets_a] if len(targets_a) else np.zeros(0, bool)
    lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    groups = {"warm_items": warm, "cold_items": ~warm,
              "new_users": (lengths >= 1) & (lengths <= NEW_USER_MAX_EVENTS)}
    return EvalCases(list(users), list(histories), targets_a, training, groups)


def leave_last_out(events: EventSequences) -> EvalCases:
    training = np.ones(len(events.labels), dtype=bool)
    users, histories, targets = [], [], []
    for u in range(len(events.user_ids)):
        lo, hi = int(events.starts[u]), int(events.starts[u + 1])
        if hi - lo < 2:
            continue
        training[hi - 1] = False
        users.append(u)
        histories.append(events.labels[lo: hi - 1].copy())
        targets.append(int(events.labels[hi - 1]))
    return _finish(events, users, histories, targets, training)


def time_split(events: EventSequences, cutoff: float) -> EvalCases:
    training = events.timestamps < cutoff
    users, histories, targets = [], [], []
    for u in range(len(events.user_ids)):
        labels, stamps = events.user_events(u)
        before = int(np.searchsorted(stamps, cutoff, side="left"))
        if before == 0 or before == len(labels):
            continue
        users.append(u)
        histories.append(labels[:before].copy())
        targets.append(int(labels[before]))
    return _finish(events, users, histories, targets, training)


def cold_item_split(events: EventSequences, share: float = 0.1, seed: int = 0) -> EvalCases:
    """leave-last-out with a seeded `share` of the bought items made cold (module docstring)."""
    bought = np.unique(events.labels)
    rng = np.random.default_rng(seed)
    cold = np.zeros(int(events.labels.max()) + 1, dtype=bool)
    cold[rng.choice(bought, size=int(round(share * len(bought))), replace=False)] = True
    training = ~cold[events.labels]
    users, histories, targets = [], [], []
    for u in range(len(events.user_ids)):
        lo, hi = int(events.starts[u]), int(events.starts[u + 1])
        training[hi - 1] = False
        history = events.labels[lo: hi - 1]
        history = history[~cold[history]]
        if len(history) == 0:
            continue
        users.append(u)
        histories.append(history.copy())
        targets.append(int(events.labels[hi - 1]))
    return _finish(events, users, histories, targets, training)
