"""A served bundle whose interaction tables hold only the training events of a split.

A bundle's popularity, co-occurrence and user-history tables are usually built from the
whole interaction log, so evaluating it as shipped would let the held-out events leak into
the features that rank them. Here the bundle is loaded as the server loads it, and those
tables are recomputed from the training events alone with the build's own code
(export.features.compute_features) and the build's own parameters from the manifest. The
encoder, HNSW index and item store are content-only and stay as they are. Nothing on disk
changes (bundles are immutable).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from export.catalog import Interaction, InteractionColumns, read_interactions
from export.features import compute_features
from server.served_bundle import ServedBundle, feature_tables
from server.users import UserHistories
from train.data import EventSequences, ItemTexts, load_events

# Parameters of compute_features that the build records in manifest["build"]["config"]
# (every keyword of compute_features the build config has a value for).
_FEATURE_PARAMETERS = tuple(
    name for name, p in inspect.signature(compute_features).parameters.items()
    if p.kind is inspect.Parameter.KEYWORD_ONLY)


def build_seed(bundle: ServedBundle) -> int:
    """The seed the bundle's build ordered same-timestamp events with."""
    return int(((bundle.manifest.get("build") or {}).get("config") or {}).get("seed", 0))


def bundle_items(bundle: ServedBundle) -> ItemTexts:
    """The bundle's catalog as train/data's ItemTexts, so event labels are index labels."""
    catalog = bundle.catalog
    return ItemTexts(list(catalog.item_ids), list(catalog.titles),
                     np.asarray(bundle.tables.created_at[:len(catalog)], dtype=np.float64))


def load_bundle_events(bundle: ServedBundle, interactions: str | Path,
                       columns: InteractionColumns | None = None) -> EventSequences:
    """Per-user sequences over the bundle's labels, ties in the build's seeded order."""
    return load_events(interactions, bundle_items(bundle), columns, seed=build_seed(bundle))


def held_out_keys(events: EventSequences, training: np.ndarray,
                  item_ids: Sequence[str]) -> Counter:
    """(user, item, timestamp) of every event outside the training set, with multiplicity."""
    held = Counter()
    for u, user in enumerate(events.user_ids):
        lo, hi = int(events.starts[u]), int(events.starts[u + 1])
        for i in np.flatnonzero(~training[lo:hi]) + lo:
            held[(user, item_ids[events.labels[i]], float(events.timestamps[i]))] += 1
    return held


def training_interactions(interactions: str | Path, held_out: Counter,
                          known_items: dict[str, int],
                          columns: InteractionColumns | None = None) -> list[Interaction]:
    """The log minus the held-out events (one row removed per held-out occurrence)."""
    remaining = Counter(held_out)
    kept = []
    for event in read_interactions(interactions, columns, known_items=known_items):
        key = (event.user_id, event.item_id, float(event.timestamp))
        if remaining.get(key, 0) > 0 and event.weight > 0:
            remaining[key] -= 1
            continue
        kept.append(event)
    return kept


def with_training_tables(bundle: ServedBundle, events: Iterable[Interaction]) -> ServedBundle:
    """A copy of the served bundle whose feature tables come from `events` only."""
    config = (bundle.manifest.get("build") or {}).get("config") or {}
    parameters = {name: config[name] for name in _FEATURE_PARAMETERS if name in config}
    catalog = bundle.catalog
    features = compute_features(events, catalog, **parameters)
    tables = feature_tables(features, catalog.attributes, bundle.tables.created_at[:len(catalog)],
                            bundle.index, bundle.tables.freshness_half_life_days)
    users = UserHistories(features.user_history, features.user_history_ts,
                          history_length=int(parameters.get("history_length", 50)))
    return dataclasses.replace(bundle, overlay=bundle.overlay.with_tables(tables, users))


def write_interactions(events: Iterable[Interaction], path: str | Path) -> int:
    """Interactions as a csv(.gz) `recserve build` / `train-ranker` read back; returns rows."""
    import csv
    import datetime as dt
    import gzip

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    rows = 0
    with opener(path, "wt", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["user_id", "item_id", "timestamp", "event", "weight"])
        for e in events:
            stamp = dt.datetime.fromtimestamp(e.timestamp, dt.timezone.utc)
            writer.writerow([e.user_id, e.item_id, stamp.isoformat().replace("+00:00", "Z"),
                             e.event, e.weight])
            rows += 1
    return rows
