"""Live writes as plain domain records, and the per-request rules they must pass.

A write is one client call (one UpsertItems, DeleteItems or RecordInteractions) and is
all-or-nothing: any bad entry refuses the whole call with InvalidRequest naming the entries.
The rules here need no state; rules that do (unknown or deleted items) are checked by the
single writer in sequence order (live_state.LiveState.check).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np

from server.errors import InvalidRequest
from server.live.config import LiveConfig
from server.users import EVENT_WEIGHTS, NEGATIVE_EVENTS

UPSERT, DELETE, INTERACTIONS = "upsert", "delete", "interactions"
# The proto's events (view, click, purchase, dislike, not_interested) plus add_to_cart,
# which catalogs' interaction files and the bundle's features also know.
EVENTS = tuple(EVENT_WEIGHTS)
_MAX_NAMED = 10  # offending entries named in one error message


@dataclass(frozen=True)
class ItemWrite:
    item_id: str
    title: str
    text: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Event:
    user_id: str
    item_id: str
    event: str
    weight: float  # the event's default weight when the client sent 0
    timestamp: float  # epoch seconds; the receive time when the client sent 0

    @property
    def negative(self) -> bool:
        return self.event in NEGATIVE_EVENTS


@dataclass
class Write:
    """One acknowledged-or-pending write. `seq` is 0 until the write-ahead log assigns it."""

    kind: str
    received_at: float
    items: tuple[ItemWrite, ...] = ()
    vectors: np.ndarray | None = None  # upserts: [len(items), dim] float32, from `encoder`
    encoder: str = ""  # fingerprint of the encoder the vectors came from
    item_ids: tuple[str, ...] = ()  # deletes
    events: tuple[Event, ...] = ()  # interactions
    seq: int = 0
    request_id: str = ""  # the client's idempotency key ("" = none)

    @property
    def size(self) -> int:
        return len(self.items) + len(self.item_ids) + len(self.events)


def validate_request_id(request_id: str, config: LiveConfig) -> str:
    if len(request_id) > config.max_request_id_chars:
        raise InvalidRequest(f"request_id longer than {config.max_request_id_chars} characters")
    return request_id


def refuse(problems: list[str], what: str) -> None:
    """Raise one InvalidRequest naming the first offending entries (nothing when empty)."""
    if problems:
        more = f" (and {len(problems) - _MAX_NAMED} more)" if len(problems) > _MAX_NAMED else ""
        raise InvalidRequest(f"{what} refused, nothing applied: " + "; ".join(problems[:_MAX_NAMED]) + more)


def _count_ok(n: int, limit: int, noun: str) -> None:
    if n == 0:
        raise InvalidRequest(f"give at least one {noun}")
    if n > limit:
        raise InvalidRequest(f"at most {limit} {noun}s per call, got {n}")


def validate_items(items: Iterable[ItemWrite], config: LiveConfig) -> tuple[ItemWrite, ...]:
    items = tuple(items)
    _count_ok(len(items), config.max_items_per_write, "item")
    problems, seen = [], set()
    for i, item in enumerate(items):
        name = f"items[{i}] ({item.item_id!r})"
        if not item.item_id.strip():
            problems.append(f"items[{i}]: empty item_id")
        elif item.item_id in seen:
            problems.append(f"{name}: item_id repeated in the batch")
        seen.add(item.item_id)
        if not (item.title.strip() or item.text.strip()):
            problems.append(f"{name}: empty title and text")
        if max(len(item.title), len(item.text)) > config.max_text_chars:
            problems.append(f"{name}: title or text longer than {config.max_text_chars} characters")
    refuse(problems, "UpsertItems")
    return items


def validate_item_ids(item_ids: Iterable[str], config: LiveConfig) -> tuple[str, ...]:
    item_ids = tuple(item_ids)
    _count_ok(len(item_ids), config.max_items_per_write, "item id")
    refuse([f"item_ids[{i}]: empty" for i, item_id in enumerate(item_ids) if not item_id.strip()],
           "DeleteItems")
    return tuple(dict.fromkeys(item_ids))  # a repeated id is deleted once


def validate_events(events: Iterable[Event], config: LiveConfig) -> tuple[Event, ...]:
    events = tuple(events)
    _count_ok(len(events), config.max_events_per_write, "event")
    problems = []
    for i, e in enumerate(events):
        name = f"events[{i}] ({e.user_id!r}, {e.item_id!r})"
        if not e.user_id.strip() or not e.item_id.strip():
            problems.append(f"events[{i}]: empty user_id or item_id")
        if e.event not in EVENT_WEIGHTS:
            problems.append(f"{name}: unknown event {e.event!r} (one of {', '.join(EVENTS)})")
        if not np.isfinite(e.weight) or e.weight < 0:
            problems.append(f"{name}: weight must be a finite number >= 0, got {e.weight}")
        if e.timestamp < 0:
            problems.append(f"{name}: negative timestamp")
    refuse(problems, "RecordInteractions")
    return events


def event_with_defaults(user_id: str, item_id: str, event: str, weight: float, timestamp_ms: int,
                        received_at: float) -> Event:
    """0 weight -> the event's default weight; 0 timestamp -> the receive time (fixed before
    the write is logged, so a replay sees the same values)."""
    if weight == 0:
        weight = EVENT_WEIGHTS.get(event, 0.0)
    timestamp = timestamp_ms / 1000.0 if timestamp_ms else received_at
    return Event(user_id, item_id, event, float(weight), float(timestamp))
