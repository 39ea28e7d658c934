"""Catalog + interaction files -> item texts and per-user event sequences for training.

Item texts come from export/item_text.py, the template the bundle embeds with, so the item
side of training is exactly what the server's index holds. Per-user sequences are ordered
by time; events sharing a timestamp (the items of one invoice) are ordered by the seeded
key export/features.py uses for the bundle's histories, never by file order (the file
order of one invoice is the order someone typed it in, and leaks nothing real).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from export.catalog import (CatalogColumns, InteractionColumns, ValidationReport, read_catalog,
                            read_interactions)
from export.errors import InvalidInput
from export.features import tie_break_keys
from export.item_text import item_text

# Events that say "not this one": never a positive, never part of a history.
NEGATIVE_EVENTS = frozenset({"dislike", "not_interested"})


@dataclass
class ItemTexts:
    """The catalog as the trainer needs it; position i is item label i (catalog file order)."""

    item_ids: list[str]
    texts: list[str]
    created_at: np.ndarray  # float64 epoch seconds, NaN when unknown

    def __len__(self) -> int:
        return len(self.item_ids)


@dataclass
class EventSequences:
    """All kept events, grouped by user, each user's events oldest first.

    Events of user u are positions starts[u]:starts[u+1] of labels / timestamps.
    """

    user_ids: list[str]
    starts: np.ndarray      # int64 [n_users + 1]
    labels: np.ndarray      # int64 item labels
    timestamps: np.ndarray  # float64 epoch seconds

    def user_events(self, u: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.starts[u], self.starts[u + 1]
        return self.labels[lo:hi], self.timestamps[lo:hi]


@dataclass
class TrainingData:
    items: ItemTexts
    events: EventSequences
    reports: dict


def load_items(path: str | Path, columns: CatalogColumns | None = None,
               text_attributes: Sequence[str] | None = None,
               report: ValidationReport | None = None) -> ItemTexts:
    """Item texts by the bundle's template (text_attributes as `recserve build` takes them)."""
    ids, texts, created = [], [], []
    for record in read_catalog(path, columns, report):
        ids.append(record.item_id)
        texts.append(item_text(record.title, record.text, record.attributes, include=text_attributes))
        created.append(np.nan if record.created_at is None else record.created_at)
    if not ids:
        raise InvalidInput(f"{path}: no usable catalog items")
    return ItemTexts(ids, texts, np.asarray(created, dtype=np.float64))


def order_events(users: np.ndarray, labels: np.ndarray, timestamps: np.ndarray,
                 user_names: list[str], seed: int) -> np.ndarray:
    """Permutation grouping events by user, by time, same-time ties by a seeded key."""
    user_hash = np.asarray([zlib.crc32(u.encode("utf-8")) for u in user_names], dtype=np.uint64)
    keys = tie_break_keys(user_hash[users], labels, timestamps, seed)
    return np.lexsort((keys, timestamps, users))


def load_events(path: str | Path, items: ItemTexts, columns: InteractionColumns | None = None,
                seed: int = 0, report: ValidationReport | None = None) -> EventSequences:
    """Positive events on catalog items, as per-user sequences (see module docstring)."""
    label_of = {item_id: i for i, item_id in enumerate(items.item_ids)}
    user_index: dict[str, int] = {}
    users, labels, stamps = [], [], []
    for event in read_interactions(path, columns, report, known_items=label_of):
        if event.event in NEGATIVE_EVENTS or event.weight <= 0:
            continue
        users.append(user_index.setdefault(event.user_id, len(user_index)))
        labels.append(label_of[event.item_id])
        stamps.append(event.timestamp)
    if not users:
        raise InvalidInput(f"{path}: no usable interactions on catalog items")
    # Users numbered in id order, so nothing downstream depends on the file's row order.
    user_names = sorted(user_index)
    renumber = np.empty(len(user_names), dtype=np.int64)
    renumber[[user_index[u] for u in user_names]] = np.arange(len(user_names))
    users_a = renumber[np.asarray(users, dtype=np.int64)]
    labels_a = np.asarray(labels, dtype=np.int64)
    stamps_a = np.asarray(stamps, dtype=np.float64)
    order = order_events(users_a, labels_a, stamps_a, user_names, seed)
    users_a, labels_a, stamps_a = users_a[order], labels_a[order], stamps_a[order]
    starts = np.searchsorted(users_a, np.arange(len(user_names) + 1)).astype(np.int64)
    return EventSequences(user_names, starts, labels_a, stamps_a)


def load_training_data(catalog: str | Path, interactions: str | Path, *,
                       catalog_columns: CatalogColumns | None = None,
                       interaction_columns: InteractionColumns | None = None,
                       text_attributes: Sequence[str] | None = None, seed: int = 0,
                       strict: bool = False) -> TrainingData:
    catalog_report = ValidationReport(str(catalog), strict)
    events_report = ValidationReport(str(interactions), strict)
    items = load_items(catalog, catalog_columns, text_attributes, catalog_report)
    events = load_events(interactions, items, interaction_columns, seed, events_report)
    return TrainingData(items, events, {"catalog": catalog_report, "interactions": events_report})
