"""LiveState: what live writes have changed on one served bundle, and how a write applies.

Only the single writer calls `check` and `apply`, on the event loop, in sequence order; the
engine reads the same structures on the event loop between its awaits, so a reader never
sees half an item. Within `apply` an item is made visible last: catalog, feature tables and
postings first, then the vector index (under its write lock).

Idempotence: a write whose seq is <= `last_applied` is skipped, and an upsert or delete
touches an item only when its seq is above that item's version (the seq of the last write
that changed it), so replaying a log twice leaves the state as replaying it once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import numpy as np

from export.bundle import Manifest
from export.item_text import DEFAULT_MAX_CHARS, item_text
from server.live.config import LiveConfig
from server.live.counters import LiveCounters
from server.live.records import DELETE, INTERACTIONS, UPSERT, ItemWrite, Write, refuse
from server.live.request_ids import RecentRequests
from server.served_bundle import ServedBundle


def encoder_fingerprint(manifest: Manifest) -> str:
    """Identifies everything that decides an item's vector: weights, max length, text template."""
    encoder = manifest.encoder
    key = {"sha256": encoder.model.sha256, "max_length": encoder.model.max_length,
           "precision": encoder.precision, "item_text": manifest.item_text}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class LiveItem:
    """An item as live writes left it (kept for snapshots)."""

    item_id: str
    label: int
    title: str
    attributes: dict[str, str]
    created_at: float
    deleted: bool
    version: int


@dataclass
class LiveState:
    bundle: ServedBundle
    config: LiveConfig
    last_applied: int = 0
    items: dict[str, LiveItem] = field(default_factory=dict)
    dirty_labels: set[int] | None = None  # labels changed while a compaction is building

    def __post_init__(self) -> None:
        self.fingerprint = encoder_fingerprint(self.bundle.manifest)
        self.bundle_count = len(self.bundle.catalog)
        self.counters = LiveCounters(
            self.bundle.tables, saturation=self.config.popularity_saturation,
            window=self.config.cooccurrence_window,
            backward_weight=self.config.cooccurrence_backward_weight,
            publish_interval_s=self.config.cooccurrence_publish_interval_s)
        self.requests = RecentRequests(self.config.request_id_window_s, self.config.request_id_max)
        self.vocab = {name: {v: i for i, v in enumerate(values)}
                      for name, values in self.bundle.features.attribute_vocab.items()}
        template = self.bundle.manifest.item_text or {}
        self._text_attributes = template.get("attributes")
        self._text_max_chars = int(template.get("max_chars") or DEFAULT_MAX_CHARS)

    @property
    def version(self) -> str:
        return self.bundle.version

    def item_texts(self, items: tuple[ItemWrite, ...]) -> list[str]:
        """The texts to embed, with the bundle's template (so they embed like built items)."""
        return [item_text(i.title, i.text, i.attributes, include=self._text_attributes,
                          max_chars=self._text_max_chars) for i in items]

    def is_live(self, item_id: str) -> bool:
        label = self.bundle.catalog.label_of.get(item_id)
        present = self.bundle.index.present
        return label is not None and label < len(present) and bool(present[label])

    # ---- checks against the state (the writer, before logging) -----------------------------

    def check(self, write: Write, pending: dict[str, bool]) -> None:
        """InvalidRequest naming entries this state refuses; `pending` holds the effect of
        writes checked earlier in the same group commit (item id -> live), and is updated."""
        def live(item_id: str) -> bool:
            return pending[item_id] if item_id in pending else self.is_live(item_id)

        if write.kind == DELETE:
            known = self.bundle.catalog.label_of
            refuse([f"item_ids[{i}] ({item_id!r}): unknown item" for i, item_id in enumerate(write.item_ids)
                    if item_id not in known and item_id not in pending], "DeleteItems")
            pending.update((item_id, False) for item_id in write.item_ids)
        elif write.kind == INTERACTIONS:
            refuse([f"events[{i}] ({e.user_id!r}, {e.item_id!r}): unknown or deleted item"
                    for i, e in enumerate(write.events) if not live(e.item_id)], "RecordInteractions")
        else:
            pending.update((item.item_id, True) for item in write.items)

    # ---- applying (the writer, after logging; replay) --------------------------------------

    def apply(self, write: Write) -> int:
        """Apply one logged write; returns how many entries changed the state."""
        self.requests.add(write.request_id, write.seq, write.received_at)
        if write.seq <= self.last_applied:
            return 0
        if write.kind == UPSERT:
            applied = self._apply_upsert(write)
        elif write.kind == DELETE:
            applied = self._apply_delete(write)
        else:
            applied = self._apply_interactions(write)
        self.last_applied = write.seq
        return applied

    def _apply_upsert(self, write: Write) -> int:
        fresh = [i for i, item in enumerate(write.items)
                 if write.seq > self._version(item.item_id)]
        if not fresh:
            return 0
        known = len(self.bundle.catalog.item_ids)
        labels = self._place([write.items[i] for i in fresh], write.received_at)
        self.bundle.index.add(write.vectors[fresh], np.asarray(labels, np.int64))  # visible now
        tables = self.bundle.tables
        new = np.asarray([label for label in labels if label >= known], np.int64)
        tables.cold_bridge.link(tables.item_knn, self.bundle.index, new)  # reachable by content
        catalog = self.bundle.catalog
        for i, label in zip(fresh, labels):
            item = write.items[i]
            created = float(self.bundle.tables.created_at[label])
            self.items[item.item_id] = LiveItem(item.item_id, label, catalog.titles[label],
                                                catalog.attributes[label], created, False, write.seq)
        self._mark_dirty(labels)
        return len(fresh)

    def _apply_delete(self, write: Write) -> int:
        catalog = self.bundle.catalog
        labels = [catalog.label_of[i] for i in write.item_ids
                  if i in catalog.label_of and write.seq > self._version(i)]
        if not labels:
            return 0
        labels_a = np.asarray(labels, np.int64)
        removed = int(self.bundle.index.present[labels_a].sum())
        self.bundle.index.delete(labels_a)  # invisible from here on: index.present is the one record
        for label in labels:
            item_id = catalog.item_ids[label]
            self.items[item_id] = LiveItem(item_id, label, catalog.titles[label], catalog.attributes[label],
                                           float(self.bundle.tables.created_at[label]), True, write.seq)
        self._mark_dirty(labels)
        return removed

    def _apply_interactions(self, write: Write) -> int:
        catalog, users, present = self.bundle.catalog, self.bundle.users, self.bundle.index.present
        applied = 0
        for event in write.events:
            label = catalog.label_of.get(event.item_id)
            if label is None or label >= len(present) or not present[label]:
                continue  # replayed onto a bundle that lacks the item
            previous = users.get(event.user_id).labels
            users.record(event.user_id, label, event.event, event.timestamp)
            if not event.negative:
                self.counters.add_event(label, event.weight, previous)
            applied += 1
        return applied

    def _version(self, item_id: str) -> int:
        item = self.items.get(item_id)
        return item.version if item is not None else -1

    def _mark_dirty(self, labels: list[int]) -> None:
        if self.dirty_labels is not None:
            self.dirty_labels.update(labels)

    # ---- catalog, postings and feature tables ----------------------------------------------

    def _place(self, items: list[ItemWrite], created_at: float) -> list[int]:
        """Labels for items (new ones appended), with catalog, postings and tables updated.

        Serving reads an item's age from tables.created_at and its deletion from
        index.present only; the catalog's own created_at/deleted columns stay as loaded."""
        catalog, tables, postings = self.bundle.catalog, self.bundle.tables, self.bundle.postings
        new = [item for item in items if item.item_id not in catalog.label_of]
        if new:
            self.counters.grow(len(catalog.item_ids) + len(new))
        labels = []
        for item in items:
            attrs = {str(k): str(v) for k, v in item.attributes.items()}
            label = catalog.label_of.get(item.item_id)
            if label is None:
                label = len(catalog.item_ids)
                catalog.item_ids.append(item.item_id)
                catalog.titles.append(item.title)
                catalog.attributes.append(attrs)
                tables.created_at[label] = created_at
                postings.add(label, attrs)
                catalog.label_of[item.item_id] = label
            else:
                postings.replace(label, catalog.attributes[label], attrs)
                catalog.titles[label] = item.title
                catalog.attributes[label] = attrs
            self._set_attribute_codes(label, attrs)
            labels.append(label)
        return labels

    def _set_attribute_codes(self, label: int, attrs: dict[str, str]) -> None:
        for name, codes in self.bundle.tables.attribute_codes.items():
            value = attrs.get(name)
            if value is None:
                codes[label] = -1
                continue
            lookup = self.vocab.setdefault(name, {})
            codes[label] = lookup.setdefault(value, len(lookup))

    # ---- snapshots -------------------------------------------------------------------------

    def items_state(self) -> list[dict]:
        return [asdict(item) for item in sorted(self.items.values(), key=lambda i: i.label)]

    def restore_items(self, items: list[dict]) -> None:
        """Re-place items a snapshot recorded (labels must come out as they were; deletions
        come back with the snapshot's present.npy)."""
        for state in sorted(items, key=lambda s: s["label"]):
            item = LiveItem(**state)
            [label] = self._place([ItemWrite(item.item_id, item.title, "", item.attributes)], item.created_at)
            if label != item.label:
                raise ValueError(f"snapshot item {item.item_id} has label {item.label}, restored as {label}")
            self.bundle.tables.created_at[label] = item.created_at
            self.items[item.item_id] = item
