"""Interaction feature tables: popularity, trending, repeat rate, item-item co-occurrence,
item-to-item CF and transition neighbours (export/neighbours.py), user histories, vocabularies.

Per-user sequences are ordered by time; events that share a timestamp (the items of one
invoice) are ordered by a seeded pseudo-random key computed from (seed, user, item,
timestamp), so the order depends neither on the file order nor on chance between runs.

Co-occurrence: within each user's sequence, item j at distance d <= window after item i
adds 1/d to C[i, j] (and `backward_weight`/d to C[j, i]); each row keeps its top_n
neighbours and is divided by its maximum. Files are numpy .npy/.npz and JSON, never pickle.

EVENT_WEIGHTS is the one event-weight table: the build weighs logged events with it and the
server weighs live events with it (server/users.py, server/live), so both agree.
"""

from __future__ import annotations

import json
import zlib
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import scipy.sparse as sp

from export.catalog import Interaction
from export.errors import BundleError
from export.item_store import Catalog
from export.item_text import is_numeric
from export.neighbours import NeighbourTable, item_knn_table, transition_table

FEATURES_FORMAT = 2
# How much one event of each kind says about a user's taste; negative feedback is no taste
# signal (it suppresses the item instead, server/users.py).
EVENT_WEIGHTS: dict[str, float] = {"purchase": 1.0, "add_to_cart": 0.5, "click": 0.25,
                                   "view": 0.1, "dislike": 0.0, "not_interested": 0.0}
NEGATIVE_EVENTS = frozenset({"dislike", "not_interested"})
MAX_VOCAB_VALUES = 1000  # attributes with more distinct values (ids, free text) are not vocabularies
_DAY = 86400.0
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


@dataclass
class InteractionFeatures:
    """Feature tables indexed by HNSW label (see module docstring for definitions)."""

    popularity: np.ndarray
    popularity_count: np.ndarray
    cooccurrence: sp.csr_matrix
    trending: np.ndarray  # float32 [n] popularity with the short (trending) half-life, max 1
    repeat_rate: np.ndarray  # float32 [n] share of the item's users who came back to it
    item_knn: NeighbourTable
    transitions: NeighbourTable
    user_history: dict[str, np.ndarray]
    user_history_ts: dict[str, np.ndarray]
    attribute_vocab: dict[str, list[str]]
    reference_time: float
    half_life_days: float
    parameters: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)

    def save(self, directory: str | Path) -> dict:
        """Write the tables into directory; returns the manifest "features" section."""
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        np.save(root / "popularity.npy", self.popularity.astype(np.float32))
        np.save(root / "popularity_count.npy", self.popularity_count.astype(np.int64))
        np.save(root / "trending.npy", self.trending.astype(np.float32))
        np.save(root / "repeat_rate.npy", self.repeat_rate.astype(np.float32))
        neighbour_files = {**self.item_knn.save(root, "item_knn"),
                           **self.transitions.save(root, "transitions")}
        sp.save_npz(root / "cooccurrence.npz", self.cooccurrence.astype(np.float32).tocsr(),
                    compressed=False)
        users = list(self.user_history)
        encoded = [u.encode("utf-8") for u in users]
        lengths = [len(self.user_history[u]) for u in users]
        np.savez(
            root / "user_history.npz",
            user_ids=np.frombuffer(b"".join(encoded), dtype=np.uint8),
            user_id_offsets=np.cumsum([0] + [len(e) for e in encoded], dtype=np.int64),
            offsets=np.cumsum([0] + lengths, dtype=np.int64),
            labels=np.concatenate([self.user_history[u] for u in users]).astype(np.int64)
            if users else np.zeros(0, np.int64),
            timestamps=np.concatenate([self.user_history_ts[u] for u in users]).astype(np.float64)
            if users else np.zeros(0, np.float64),
        )
        (root / "attribute_vocab.json").write_text(
            json.dumps(self.attribute_vocab, ensure_ascii=False, indent=1, sort_keys=True))
        meta = {
            "format": FEATURES_FORMAT, "reference_time": self.reference_time,
            "half_life_days": self.half_life_days, "parameters": self.parameters,
            "counts": self.counts,
        }
        (root / "features.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        return {
            **meta,
            "files": {
                "popularity.npy": "float32 [n_items] time-decayed popularity, max 1",
                "popularity_count.npy": "int64 [n_items] purchase count",
                "trending.npy": "float32 [n_items] popularity with the trending half-life, max 1",
                "repeat_rate.npy": "float32 [n_items] share of the item's users who returned to it",
                **neighbour_files,
                "cooccurrence.npz": "scipy CSR float32 [n_items, n_items], top-N per row, row max 1",
                "user_history.npz": "utf-8 user_ids + user_id_offsets; per user offsets into "
                                    "labels (int64) and timestamps (float64), most recent last",
                "attribute_vocab.json": "attribute name -> values, most frequent first",
                "features.json": "these parameters",
            },
        }

    @classmethod
    def load(cls, directory: str | Path) -> "InteractionFeatures":
        root = Path(directory)
        try:
            meta = json.loads((root / "features.json").read_text())
            if meta.get("format") != FEATURES_FORMAT:
                raise BundleError(f"{root}: feature format {meta.get('format')!r} unsupported")
            history = np.load(root / "user_history.npz", allow_pickle=False)
            popularity = np.load(root / "popularity.npy", allow_pickle=False)
            popularity_count = np.load(root / "popularity_count.npy", allow_pickle=False)
            cooccurrence = sp.load_npz(root / "cooccurrence.npz").tocsr()
            trending = np.load(root / "trending.npy", allow_pickle=False)
            repeat_rate = np.load(root / "repeat_rate.npy", allow_pickle=False)
            item_knn = NeighbourTable.load(root, "item_knn")
            transitions = NeighbourTable.load(root, "transitions")
            vocab = json.loads((root / "attribute_vocab.json").read_text())
        except (OSError, ValueError, KeyError) as exc:
            raise BundleError(f"{root}: unreadable feature tables: {exc}") from exc
        blob = history["user_ids"].tobytes()
        id_offsets, offsets = history["user_id_offsets"], history["offsets"]
        labels, stamps = history["labels"], history["timestamps"]
        user_history, user_history_ts = {}, {}
        for i in range(len(offsets) - 1):
            user = blob[id_offsets[i]:id_offsets[i + 1]].decode("utf-8")
            user_history[user] = labels[offsets[i]:offsets[i + 1]]
            user_history_ts[user] = stamps[offsets[i]:offsets[i + 1]]
        return cls(popularity, popularity_count, cooccurrence, trending, repeat_rate, item_knn,
                   transitions, user_history, user_history_ts, vocab, meta["reference_time"], meta["half_life_days"],
                   meta.get("parameters", {}), meta.get("counts", {}))


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a well-spread, deterministic 64-bit hash of each value."""
    x = x.astype(np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9) & _MASK64
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB) & _MASK64
    return x ^ (x >> np.uint64(31))


def tie_break_keys(user_hash: np.ndarray, labels: np.ndarray, timestamps: np.ndarray,
                   seed: int) -> np.ndarray:
    """Seeded pseudo-random keys ordering same-timestamp events independently of file order."""
    with np.errstate(over="ignore"):
        key = _mix64(np.full(len(labels), seed, dtype=np.uint64)) ^ user_hash.astype(np.uint64)
        key = _mix64(key ^ _mix64(labels.astype(np.uint64)))
        key = _mix64(key ^ timestamps.astype(np.int64).view(np.uint64))
    return key


def _top_n_rows(matrix: sp.csr_matrix, top_n: int) -> sp.csr_matrix:
    """Keep the top_n largest entries of each row, then divide each row by its maximum."""
    matrix = matrix.tocsr()
    matrix.sum_duplicates()
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    order = np.lexsort((matrix.indices, -matrix.data, rows))  # value desc, then label: stable
    rank = np.arange(matrix.nnz) - matrix.indptr[rows[order]]
    keep = order[rank < top_n]
    rows, cols, data = rows[keep], matrix.indices[keep], matrix.data[keep].astype(np.float32)
    row_max = np.zeros(matrix.shape[0], dtype=np.float32)
    np.maximum.at(row_max, rows, data)
    data = data / row_max[rows]
    return sp.csr_matrix((data, (rows, cols)), shape=matrix.shape, dtype=np.float32)


def cooccurrence_matrix(users: np.ndarray, labels: np.ndarray, n_items: int, *, window: int,
                        backward_weight: float, top_n: int) -> sp.csr_matrix:
    """Item-item co-occurrence from sequences sorted by (user, time, tie key)."""
    total = sp.csr_matrix((n_items, n_items), dtype=np.float32)
    for distance in range(1, window + 1):
        same = users[:-distance] == users[distance:]
        src, dst = labels[:-distance][same], labels[distance:][same]
        differ = src != dst
        src, dst = src[differ], dst[differ]
        weight = np.full(len(src), 1.0 / distance, dtype=np.float32)
        forward = sp.csr_matrix((weight, (src, dst)), shape=(n_items, n_items))
        total = total + forward
        if backward_weight > 0:
            total = total + forward.T.tocsr() * np.float32(backward_weight)
    return _top_n_rows(total, top_n)


def attribute_vocabulary(catalog: Catalog, max_values: int = MAX_VOCAB_VALUES) -> dict[str, list[str]]:
    """Attribute name -> values (most frequent first) for categorical attributes: few distinct
    values, not all numeric (a price is a number for the ranker, not a category)."""
    counters: dict[str, Counter] = {}
    for attributes in catalog.attributes:
        for name, value in attributes.items():
            counters.setdefault(name, Counter())[value] += 1
    return {
        name: [v for v, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
        for name, counts in sorted(counters.items())
        if len(counts) <= max_values and not all(is_numeric(v) for v in counts)
    }


def _event_columns(interactions: Iterable[Interaction], catalog: Catalog,
                   event_weights: dict[str, float]):
    """Known-item events as numpy columns (user code, label, time, weight, is purchase)."""
    user_code: dict[str, int] = {}
    # array.array: 8 bytes an event instead of a Python object each (millions of events).
    codes, labels, stamps = array("q"), array("q"), array("d")
    weights, purchases = array("d"), array("b")
    skipped = 0
    for event in interactions:
        label = catalog.label_of.get(event.item_id)
        if label is None:
            skipped += 1
            continue
        if event.event in NEGATIVE_EVENTS:
            continue  # a dislike is not a co-interaction, nor part of a taste history
        codes.append(user_code.setdefault(event.user_id, len(user_code)))
        labels.append(label)
        stamps.append(event.timestamp)
        weights.append(event.weight * event_weights.get(event.event, 1.0))
        purchases.append(event.event == "purchase")
    columns = (np.frombuffer(codes, dtype=np.int64), np.frombuffer(labels, dtype=np.int64),
               np.frombuffer(stamps, dtype=np.float64), np.frombuffer(weights, dtype=np.float64),
               np.frombuffer(purchases, dtype=np.int8).astype(bool))
    return list(user_code), columns, skipped


def _user_histories(user_names: list[str], users: np.ndarray, labels: np.ndarray,
                    stamps: np.ndarray, history_length: int):
    """Per user, the last history_length labels and times of the (user, time)-sorted events."""
    history, history_ts = {}, {}
    if len(users):
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
        ends = np.r_[starts[1:], len(users)]
        for start, end in zip(starts.tolist(), ends.tolist()):
            first = max(start, end - history_length)
            name = user_names[users[start]]
            history[name] = labels[first:end].copy()
            history_ts[name] = stamps[first:end].copy()
    return history, history_ts


def repeat_rates(users: np.ndarray, labels: np.ndarray, stamps: np.ndarray, n_items: int) -> np.ndarray:
    """Per item, the share of its users with events at two or more distinct times."""
    if len(users) == 0:
        return np.zeros(n_items, np.float32)
    moments = np.unique(np.stack([users, labels, stamps.view(np.int64)]), axis=1)
    pairs, per_pair = np.unique(moments[:2], axis=1, return_counts=True)
    users_of = np.bincount(pairs[1], minlength=n_items)
    returned = np.bincount(pairs[1], weights=per_pair >= 2, minlength=n_items)
    return (returned / np.maximum(users_of, 1)).astype(np.float32)


def _decayed_popularity(labels, weights, stamps, reference_time, half_life_days, n_items):
    decay = 0.5 ** ((reference_time - stamps) / (half_life_days * _DAY))
    popularity = np.bincount(labels, weights=weights * decay, minlength=n_items)
    top = popularity.max() if len(popularity) else 0.0
    return (popularity / top if top > 0 else popularity).astype(np.float32)


def compute_features(
    interactions: Iterable[Interaction],
    catalog: Catalog,
    *,
    half_life_days: float = 30.0,
    trending_half_life_days: float = 7.0,
    top_n: int = 50,
    neighbours: int = 40,
    knn_recent_items: int = 200,
    history_length: int = 50,
    seed: int = 0,
    window: int = 5,
    backward_weight: float = 0.5,
    event_weights: dict[str, float] | None = None,
) -> InteractionFeatures:
    """Feature tables from interactions whose items are in catalog (others are skipped)."""
    event_weights = dict(EVENT_WEIGHTS if event_weights is None else event_weights)
    n_items = len(catalog)
    user_names, (users, labels, stamps, weights, purchases), skipped = \
        _event_columns(interactions, catalog, event_weights)

    user_hash = np.asarray([zlib.crc32(u.encode("utf-8")) for u in user_names], dtype=np.uint64)
    keys = tie_break_keys(user_hash[users], labels, stamps, seed)
    # Sort by user name (not first appearance) so nothing depends on the file's order.
    user_rank = np.argsort(np.argsort(np.asarray(user_names, dtype=object)))
    order = np.lexsort((keys, stamps, user_rank[users]))
    users, labels, stamps = users[order], labels[order], stamps[order]
    weights, purchases = weights[order], purchases[order]

    reference_time = float(stamps.max()) if len(stamps) else 0.0
    popularity = _decayed_popularity(labels, weights, stamps, reference_time, half_life_days, n_items)
    trending = _decayed_popularity(labels, weights, stamps, reference_time,
                                   trending_half_life_days, n_items)
    popularity_count = np.bincount(labels[purchases], minlength=n_items).astype(np.int64)
    cooccurrence = cooccurrence_matrix(users, labels, n_items, window=window,
                                       backward_weight=backward_weight, top_n=top_n)
    item_knn = item_knn_table(users, labels, n_items, width=neighbours, per_user=knn_recent_items)
    transitions = transition_table(users, labels, n_items, width=neighbours, window=window)
    history, history_ts = _user_histories(user_names, users, labels, stamps, history_length)
    return InteractionFeatures(
        popularity=popularity, popularity_count=popularity_count, cooccurrence=cooccurrence,
        trending=trending, repeat_rate=repeat_rates(users, labels, stamps, n_items),
        item_knn=item_knn, transitions=transitions,
        user_history=history, user_history_ts=history_ts,
        attribute_vocab=attribute_vocabulary(catalog), reference_time=reference_time,
        half_life_days=float(half_life_days),
        parameters={"top_n": top_n, "history_length": history_length, "seed": seed,
                    "window": window, "backward_weight": backward_weight,
                    "event_weights": event_weights, "neighbours": neighbours,
                    "knn_recent_items": knn_recent_items,
                    "trending_half_life_days": trending_half_life_days},
        counts={"interactions": int(len(labels)), "users": len(user_names),
                "skipped_unknown_items": skipped, "cooccurrence_nnz": int(cooccurrence.nnz),
                "neighbour_bytes_per_item": (item_knn.nbytes + transitions.nbytes) / max(n_items, 1)},
    )
