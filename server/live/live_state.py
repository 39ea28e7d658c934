"""LiveState: the log applier of one served bundle: checks writes against it, applies them.

Only the single writer calls `check` and `apply`, on the event loop, in sequence order; what
a write changes is the bundle's LiveOverlay (server/live/overlay.py), which the engine reads
on the event loop between its awaits, so a reader never sees half an item. Within `apply` an
item is made visible last: catalog, feature tables and postings first, then the vector
index (under its write lock).

Idempotence: a write whose seq is <= `last_applied` is skipped, and an upsert or delete
touches an item only when its seq is above that item's version (the seq of the last write
that changed it), so replaying a log twice leaves the state as replaying it once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

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
        self.overlay = self.bundle.overlay
        self.bundle_count = len(self.overlay.catalog)
        self.overlay.start_counting(self.config)
        self.requests = RecentRequests(self.config.request_id_window_s, self.config.request_id_max)
        template = self.bundle.manifest.item_text or {}
        self._text_attributes = template.get("attributes")
        self._text_max_chars = int(template.get("max_chars") or DEFAULT_MAX_CHARS)

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def counters(self) -> LiveCounters:
        """The live event counts laid over the bundle's popularity and co-occurrence."""
        return self.overlay.counters

    def item_texts(self, items: tuple[ItemWrite, ...]) -> list[str]:
        """The texts to embed, with the bundle's template (so they embed like built items)."""
        return [item_text(i.title, i.text, i.attributes, include=self._text_attributes,
                          max_chars=self._text_max_chars) for i in items]

    def is_live(self, item_id: str) -> bool:
        return self.overlay.is_live(item_id)

    # ---- checks against the state (the writer, before logging) -----------------------------

    def check(self, write: Write, pending: dict[str, bool]) -> None:
        """InvalidRequest naming entries this state refuses; `pending` holds the effect of
        writes checked earlier in the same group commit (item id -> live), and is updated."""
        def live(item_id: str) -> bool:
            return pending[item_id] if item_id in pending else self.is_live(item_id)

        if write.kind == DELETE:
            known = self.overlay.catalog.label_of
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
        overlay = self.overlay
        known = len(overlay.catalog)
        labels = overlay.place([write.items[i] for i in fresh], write.received_at)
        overlay.add_vectors(write.vectors[fresh], labels, known)  # visible now
        for i, label in zip(fresh, labels):
            self._remember(write.items[i].item_id, label, False, write.seq)
        self._mark_dirty(labels)
        return len(fresh)

    def _apply_delete(self, write: Write) -> int:
        label_of = self.overlay.catalog.label_of
        labels = [label_of[i] for i in write.item_ids
                  if i in label_of and write.seq > self._version(i)]
        if not labels:
            return 0
        removed = self.overlay.delete(labels)  # invisible from here on: index.present is the one record
        for label in labels:
            self._remember(self.overlay.catalog.item_ids[label], label, True, write.seq)
        self._mark_dirty(labels)
        return removed

    def _apply_interactions(self, write: Write) -> int:
        # an event on an item the bundle lacks (replayed onto another bundle) changes nothing
        return sum(self.overlay.record(event) for event in write.events)

    def _version(self, item_id: str) -> int:
        item = self.items.get(item_id)
        return item.version if item is not None else -1

    def _mark_dirty(self, labels: list[int]) -> None:
        if self.dirty_labels is not None:
            self.dirty_labels.update(labels)

    def _remember(self, item_id: str, label: int, deleted: bool, seq: int) -> None:
        """The item's record for snapshots, as the overlay now holds it."""
        catalog = self.overlay.catalog
        self.items[item_id] = LiveItem(item_id, label, catalog.titles[label], catalog.attributes[label],
                                       float(self.overlay.tables.created_at[label]), deleted, seq)

    # ---- snapshots -------------------------------------------------------------------------

    def items_state(self) -> list[dict]:
        return [asdict(item) for item in sorted(self.items.values(), key=lambda i: i.label)]

    def restore_items(self, items: list[dict]) -> None:
        """Re-place items a snapshot recorded (labels must come out as they were; deletions
        come back with the snapshot's present.npy)."""
        for state in sorted(items, key=lambda s: s["label"]):
            item = LiveItem(**state)
            [label] = self.overlay.place([ItemWrite(item.item_id, item.title, "", item.attributes)],
                                         item.created_at)
            if label != item.label:
                raise ValueError(f"snapshot item {item.item_id} has label {item.label}, restored as {label}")
            self.overlay.tables.created_at[label] = item.created_at
            self.items[item.item_id] = item
