"""LiveOverlay: everything live writes change in a served bundle, and the only code that changes it.

A loaded bundle (server/served_bundle.py) is its immutable part (manifest, encoder, ranker,
history adapter) plus one overlay, built from the bundle's files when it is loaded:

- `catalog`: item ids, titles and attributes by label, and `label_of` (bundle items first,
  items upserted live appended after them);
- `index`: the vectors and `index.present`, the one record of which items are deleted;
- `postings`: attribute -> value -> labels, for filters;
- `tables`: the feature tables ranking reads (`tables.created_at` is the one record of an
  item's age), with `counters` laying live event counts over the bundle's;
- `users`: the bundle's histories plus live interactions.

Readers (the engine, the sources) read these structures between awaits on the event loop;
only the log applier (server/live/live_state.py) calls the methods below, in sequence order.
Each serving process loads its own overlay and applies the same log to it, so every worker
converges to the same state ("one log, many appliers").
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from server.live.config import LiveConfig
from server.live.counters import LiveCounters
from server.live.records import Event, ItemWrite
from server.ranking.features import FeatureTables
from server.retrieval.backend import RetrievalBackend
from server.retrieval.filters import AttributePostings
from server.retrieval.sources.cold_bridge import ColdBridge
from server.users import UserHistories

NEIGHBOUR_TABLES = ("item_knn", "transitions")  # neighbour tables live interactions strengthen


@dataclass
class ServedCatalog:
    """The served items by label. Deletion is `index.present`'s, age is `tables.created_at`'s:
    neither is kept here."""

    item_ids: list[str]
    titles: list[str]
    attributes: list[dict[str, str]]
    label_of: dict[str, int]

    def __len__(self) -> int:
        return len(self.item_ids)


@dataclass
class LiveOverlay:
    catalog: ServedCatalog
    index: RetrievalBackend
    postings: AttributePostings
    tables: FeatureTables
    users: UserHistories
    attribute_vocab: dict[str, dict[str, int]]  # attribute -> value -> code (grows with upserts)
    counters: LiveCounters | None = field(default=None, repr=False)

    def with_tables(self, tables: FeatureTables, users: UserHistories) -> "LiveOverlay":
        """The same items over other feature tables and histories (training views)."""
        return replace(self, tables=tables, users=users, counters=None)

    def start_counting(self, config: LiveConfig) -> LiveCounters:
        """The live counters over this overlay's tables (once: the applier calls it)."""
        if self.counters is None:
            self.counters = LiveCounters(
                self.tables, saturation=config.popularity_saturation,
                window=config.cooccurrence_window,
                backward_weight=config.cooccurrence_backward_weight,
                publish_interval_s=config.cooccurrence_publish_interval_s)
        return self.counters

    def is_live(self, item_id: str) -> bool:
        label = self.catalog.label_of.get(item_id)
        present = self.index.present
        return label is not None and label < len(present) and bool(present[label])

    # ---- upserts and deletes ----------------------------------------------------------------

    def place(self, items: Sequence[ItemWrite], created_at: float) -> list[int]:
        """Labels for items (new ones appended), with catalog, postings and tables updated;
        vectors come after (`add_vectors`), so an item becomes findable last. An item's text
        is not kept: only its vector, embedded by the writer, carries it."""
        catalog = self.catalog
        new = sum(item.item_id not in catalog.label_of for item in items)
        if new:
            self._counters().grow(len(catalog) + new)
        labels = []
        for item in items:
            attrs = {str(k): str(v) for k, v in item.attributes.items()}
            label = catalog.label_of.get(item.item_id)
            if label is None:
                label = len(catalog)
                catalog.item_ids.append(item.item_id)
                catalog.titles.append(item.title)
                catalog.attributes.append(attrs)
                self.tables.created_at[label] = created_at
                self.postings.add(label, attrs)
                catalog.label_of[item.item_id] = label
            else:
                self.postings.replace(label, catalog.attributes[label], attrs)
                catalog.titles[label] = item.title
                catalog.attributes[label] = attrs
            self._set_attribute_codes(label, attrs)
            labels.append(label)
        return labels

    def add_vectors(self, vectors: np.ndarray, labels: Sequence[int], known: int) -> None:
        """Make placed items findable (labels >= `known` are new: linked as cold items)."""
        labels_a = np.asarray(labels, np.int64)
        self.index.add(vectors, labels_a)  # visible from here on
        new = labels_a[labels_a >= known]
        self.tables.cold_bridge.link(self.tables.item_knn, self.index, new)  # reachable by content

    def delete(self, labels: Sequence[int]) -> int:
        """Remove items from what can be returned; how many were present."""
        labels_a = np.asarray(labels, np.int64)
        removed = int(self.index.present[labels_a].sum())
        self.index.delete(labels_a)
        return removed

    # ---- interactions -----------------------------------------------------------------------

    def record(self, event: Event) -> bool:
        """One live interaction; False when the item is unknown or deleted (nothing changes)."""
        label = self.catalog.label_of.get(event.item_id)
        present = self.index.present
        if label is None or label >= len(present) or not present[label]:
            return False
        previous = self.users.get(event.user_id).labels
        self.users.record(event.user_id, label, event.event, event.timestamp)
        if not event.negative:
            self._counters().add_event(label, event.weight, previous)
        return True

    # ---- snapshots --------------------------------------------------------------------------

    def restore(self, graph, vectors: np.ndarray, present: np.ndarray, users: dict,
                popularity: np.ndarray, cooccurrence, neighbours: dict) -> None:
        """Lay a snapshot's arrays over a freshly loaded overlay whose items were re-placed."""
        self.index.load_parts(graph, vectors, present)
        self.users.restore_live_overlay(users)
        self._counters().restore(popularity, cooccurrence)
        for name, table in neighbours.items():
            setattr(self.tables, name, table)
        # derived from the restored items and neighbours, as when a bundle is loaded
        self.tables.cold_bridge = ColdBridge.derive(self.tables.item_knn, self.index)

    # ---- helpers ----------------------------------------------------------------------------

    def _counters(self) -> LiveCounters:
        if self.counters is None:
            raise RuntimeError("live writes applied before start_counting")
        return self.counters

    def _set_attribute_codes(self, label: int, attrs: dict[str, str]) -> None:
        for name, codes in self.tables.attribute_codes.items():
            value = attrs.get(name)
            if value is None:
                codes[label] = -1
                continue
            lookup = self.attribute_vocab.setdefault(name, {})
            codes[label] = lookup.setdefault(value, len(lookup))
