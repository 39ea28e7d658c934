"""Time-based split and (recent history -> next item) training pairs.

The split is by time, not by user: everything before `cutoff` is the past the model may
learn from; the validation period starts at `cutoff`, so a validation target is always
later than every training event and the model is measured on a future it never saw.

A pair is one event (the target) of a user and the user's distinct items before it, newest
first. The query text is the item texts of the newest `query_items` of them; a target that
is already in the history window is skipped (a query that contains the answer teaches
copying, not recommending).

Item pairs (`co_interaction_pairs`) teach the item side: an item's text as the query, an
item the same customers bought close to it as the target. They are what item-to-item CF
knows, put into the text encoder, so the content source finds co-bought items and a cold
item (no events yet) lands near the items its text resembles and those are bought with.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from export.errors import InvalidInput
from train.data import EventSequences

QUERY_SEPARATOR = " || "  # between history items; distinct from the template's " | " and "; "


@dataclass(frozen=True)
class Pair:
    user: int
    history: tuple[int, ...]  # distinct item labels before the target, newest first
    query_items: int          # how many of `history` make the query text
    target: int               # item label of the next item
    timestamp: float          # the target event's time
    text: str | None = None   # a natural-language query instead of a history (queries.py)

    @property
    def window(self) -> tuple[int, ...]:
        return self.history[: self.query_items]


def validation_cutoff(events: EventSequences, validation_fraction: float) -> float:
    """The time from which the last `validation_fraction` of events lie (the split point)."""
    if not 0 < validation_fraction < 1:
        raise InvalidInput(f"validation fraction must be in (0, 1), not {validation_fraction}")
    stamps = np.sort(events.timestamps)
    cutoff = float(stamps[min(len(stamps) - 1, int(len(stamps) * (1 - validation_fraction)))])
    if cutoff <= stamps[0]:
        raise InvalidInput("all interactions share one time; a time-based split is impossible")
    return cutoff


def query_text(pair: Pair, item_texts: Sequence[str]) -> str:
    """The query side: the texts of the pair's history window, newest first (truncation
    at the model's max length drops the oldest), or the pair's own query text."""
    if pair.text is not None:
        return pair.text
    return QUERY_SEPARATOR.join(item_texts[label] for label in pair.window)


def _history_before(labels: np.ndarray, i: int, cap: int) -> tuple[int, ...]:
    """Distinct labels before position i, newest first, at most cap of them."""
    seen: dict[int, None] = {}
    for label in labels[i - 1:: -1].tolist() if i > 0 else ():
        if label not in seen:
            seen[label] = None
            if len(seen) == cap:
                break
    return tuple(seen)


def build_pairs(
    events: EventSequences,
    *,
    start: float = -math.inf,
    end: float = math.inf,
    history_items: int,
    history_cap: int | None = None,
    per_user: int,
    seed: int,
    random_query_length: bool,
) -> list[Pair]:
    """Pairs whose target time lies in [start, end), at most per_user per user, shuffled.

    history_cap (default history_items) keeps a longer history than the query uses (the
    validation's item-vector query needs it). random_query_length draws each query's length
    from 1..history_items, so one-item queries (item -> next item, the way the server's
    item vectors are used) are trained alongside longer histories.

    Each user's draws come from a generator seeded by (seed, user id), and the final shuffle
    from one seeded by (seed, start, end): a user's pairs depend on nothing but that user's
    events in the window, so events outside [start, end) cannot change which pairs are made.
    """
    cap = max(history_cap or history_items, history_items)
    pairs: list[Pair] = []
    for u, user_id in enumerate(events.user_ids):
        rng = np.random.default_rng([seed, zlib.crc32(user_id.encode("utf-8"))])
        labels, stamps = events.user_events(u)
        candidates = np.flatnonzero((stamps >= start) & (stamps < end))
        candidates = candidates[candidates > 0]
        taken = 0
        for i in rng.permutation(candidates).tolist():
            if taken == per_user:
                break
            history = _history_before(labels, i, cap)
            window = min(history_items, len(history))
            if int(labels[i]) in history[:window]:
                continue
            length = int(rng.integers(1, window + 1)) if random_query_length else window
            pairs.append(Pair(u, history, length, int(labels[i]), float(stamps[i])))
            taken += 1
    order = np.random.default_rng([seed, *_window_key(start, end)]).permutation(len(pairs))
    return [pairs[k] for k in order]


def co_interaction_pairs(events: EventSequences, *, end: float = math.inf, window: int,
                         per_item: int, min_users: int, seed: int) -> list[Pair]:
    """(item -> co-interacted item) pairs from events before `end`, shuffled.

    Two distinct items are co-interacted when one user's sequence has them at most `window`
    positions apart; a pair counts the distinct users who did that, and needs `min_users`
    of them (one customer's basket is an anecdote). Each item keeps its `per_item` strongest
    partners, both directions, so popular items do not take the whole pool. The pair's
    `user` is -1 (no one user), its timestamp the latest event of the pair.
    """
    if per_item <= 0:
        return []
    seen: dict[tuple[int, int], tuple[set, float]] = {}
    for u in range(len(events.user_ids)):
        labels, stamps = events.user_events(u)
        before = stamps < end
        labels, stamps = labels[before].tolist(), stamps[before].tolist()
        for i, a in enumerate(labels):
            for j in range(i + 1, min(i + 1 + window, len(labels))):
                b = labels[j]
                if a == b:
                    continue
                for key in ((a, b), (b, a)):
                    users, latest = seen.get(key, (set(), -math.inf))
                    users.add(u)
                    seen[key] = (users, max(latest, stamps[j]))
    by_anchor: dict[int, list[tuple[int, int, float]]] = {}
    for (a, b), (users, latest) in seen.items():
        if len(users) >= min_users:
            by_anchor.setdefault(a, []).append((len(users), b, latest))
    pairs = []
    for anchor in sorted(by_anchor):
        strongest = sorted(by_anchor[anchor], key=lambda t: (-t[0], t[1]))[:per_item]
        pairs.extend(Pair(-1, (anchor,), 1, b, latest) for _, b, latest in strongest)
    order = np.random.default_rng([seed, 3]).permutation(len(pairs))
    return [pairs[k] for k in order]


def _window_key(start: float, end: float) -> tuple[int, int]:
    """Two non-negative ints naming the time window (seeds take no floats or infinities)."""
    return tuple(0 if math.isinf(t) else int(t) & 0xFFFFFFFF for t in (start, end))


def epoch_slice(pool: Sequence[Pair], epoch: int, pairs_per_epoch: int) -> list[Pair]:
    """The pairs of one epoch: consecutive slices of the shuffled pool, wrapping around,
    so no pair repeats until the pool is used up."""
    if pairs_per_epoch <= 0 or pairs_per_epoch >= len(pool):
        return list(pool)
    begin = (epoch * pairs_per_epoch) % len(pool)
    chosen = list(pool[begin: begin + pairs_per_epoch])
    if len(chosen) < pairs_per_epoch:
        chosen += pool[: pairs_per_epoch - len(chosen)]
    return chosen
