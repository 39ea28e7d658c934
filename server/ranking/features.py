"""Per-candidate ranking features, computed for all candidates at once (numpy, no loops).

FEATURES is the ranker's input contract: names and column order are stable (new features
are appended, never reordered), the linear scorer's weights and an exported GBDT ranker
are keyed by it, and `FEATURES_VERSION` changes whenever it does.

- retrieval: content similarity to the request's interests (query and history clusters);
  the content source's score, computed for every candidate whichever source found it
- query_similarity: cosine to the query text (0 without a query)
- history_max_similarity / history_mean_similarity: to the recent history items (recency-weighted mean)
- co_occurrence: recency-weighted windowed co-occurrence with the history (0..1, live-updated)
- popularity: time-decayed popularity (0..1, the bundle's table plus live counts); the popular source's score
- freshness: exp decay of the item's age since created_at
- attribute_affinity: share of the user's attribute histogram the item's attributes match
- already_interacted: 1 when the item is in the user's history
- disliked_similarity: max cosine to items the user disliked or marked not interested
- item_knn: recency-weighted item-to-item CF cosine to the history; the item-kNN source's score
- transition: how often the item follows the last few history items; the transitions source's score
- trending: popularity with a short half-life ("popular this week")
- repeat_purchase: already_interacted x the item's repeat rate (a staple bought again)
- rank_<source>: 1 / (1 + rank) in that source's list (0 when the source did not find it),
  for the RANKED_SOURCES
- source_count: how many of them found the candidate
- history_count: how often the item occurs in the served history, over its length
- history_recency: 1 / (1 + events since the item's last occurrence in the history) (0: not in it)
- user_repeat_share: share of the history's events that repeat an earlier one (a user who
  re-buys); with history_size (log1p of the history's length), per user, not per item: the
  trees learn from them when repeats and item-to-item evidence matter for this user
- neighbour_likeness: how like the item is to what item-to-item CF expects next: the largest
  cosine (>= 0) to one of the LIKENESS_ITEMS items the history's item-kNN neighbours score
  highest (the item itself left out), times that item's score over the top one. Content
  evidence that an item nobody has bought yet (a cold item: a new colour, a new size) is
  what customers like this one buy; the same definition for warm and cold items
- bridge_likeness: the sum of those head cosines (times the head item's weight) over the head
  items that are among the item's WARM_NEIGHBOURS nearest warm items by content: what the
  cold bridge scores the cold items it finds with (server/retrieval/sources/cold_bridge.py),
  defined alike for every item, so the cold copies the ranker learns from keep it
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from export.neighbours import EXPECTATION_HEAD, NeighbourTable, expectation_head
from server.retrieval.sources.base import SOURCE_NAMES
from server.retrieval.sources.cold_bridge import ColdBridge

_VERSION_2_SOURCES = 5  # their rank columns precede source_count; "repeat"'s follows it
_VERSION_3_SOURCES = 6
FEATURES: tuple[str, ...] = (
    "retrieval",
    "query_similarity",
    "history_max_similarity",
    "history_mean_similarity",
    "co_occurrence",
    "popularity",
    "freshness",
    "attribute_affinity",
    "already_interacted",
    "disliked_similarity",
    "item_knn",
    "transition",
    "trending",
    "repeat_purchase",
    *(f"rank_{name}" for name in SOURCE_NAMES[:_VERSION_2_SOURCES]),
    "source_count",
    # version 3
    "history_count",
    "history_recency",
    "user_repeat_share",
    "history_size",
    *(f"rank_{name}" for name in SOURCE_NAMES[_VERSION_2_SOURCES:_VERSION_3_SOURCES]),
    # version 4
    "neighbour_likeness",
    # version 5
    "bridge_likeness",
)
FEATURES_VERSION = 5
# Sources whose list rank is a feature. The cold bridge's is not: the items it finds have no
# interactions, and the trees learn such rows from the cold copies of their training groups
# (train/ranker/cold_items.py), which no bridge found. With a rank feature of its own the
# trees learned "found by the bridge" from the few naturally cold fit items, mostly
# negatives, and cold items' Recall@50 fell from 0.19 to 0.12 (docs/EVALUATION.md).
RANKED_SOURCES: tuple[str, ...] = SOURCE_NAMES[:_VERSION_3_SOURCES]
LIKENESS_ITEMS = EXPECTATION_HEAD  # the item-kNN expectation's head; its cosines join the history's product
# What an item nobody has interacted with yet (a cold item) has at 0: the columns read from
# interaction tables or from the collaborative sources. The ranker's training also shows it
# such rows (train/ranker/cold_items.py), so cold items are ranked on their content.
COLLABORATIVE_SOURCES: tuple[str, ...] = ("item_knn", "transitions", "popular", "trending", "repeat")
INTERACTION_FEATURES: tuple[str, ...] = (
    "co_occurrence", "popularity", "already_interacted", "item_knn", "transition", "trending",
    "repeat_purchase", "history_count", "history_recency",
    *(f"rank_{name}" for name in COLLABORATIVE_SOURCES),
)
# The same for every candidate of a request (they describe the user): they shift all scores
# alike, so they never explain why one item is above another.
USER_FEATURES: tuple[str, ...] = ("user_repeat_share", "history_size")
FEATURE_NAMES = FEATURES  # the name train/ and older code use
COLUMN = {name: i for i, name in enumerate(FEATURES)}
INTERACTION_COLUMNS = np.asarray([COLUMN[name] for name in INTERACTION_FEATURES])
_RANK_COLUMNS = np.asarray([COLUMN[f"rank_{name}"] for name in RANKED_SOURCES])


def without_interactions(features: np.ndarray) -> np.ndarray:
    """Bool per feature row: an item nobody has interacted with (every interaction feature 0),
    the rows the ranker's cold copies teach it (train/ranker/cold_items.py)."""
    return ~features[:, INTERACTION_COLUMNS].any(axis=1)


@dataclass
class RankingContext:
    """Everything about the request the features need (labels are index labels)."""

    query_vector: np.ndarray | None
    history_labels: np.ndarray  # oldest..newest
    history_weights: np.ndarray  # recency weights aligned with history_labels, sum 1
    disliked_labels: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    now: float = 0.0  # epoch seconds
    recent_weights: np.ndarray | None = None  # transition weights of the history (newest last)
    # "item_knn" / "transitions" -> (sorted labels, scores) already aggregated by the sources
    neighbour_scores: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    expectation_head: tuple[np.ndarray, np.ndarray] | None = None  # as the cold bridge took it


@dataclass
class FeatureTables:
    """The item-side tables features read (from the bundle, updated by live writes).

    Arrays may be shorter than the catalog (items added live): lookups past the end read 0.
    """

    popularity: np.ndarray  # [n] 0..1
    cooccurrence: sp.csr_matrix  # [n, n]
    created_at: np.ndarray  # [n] epoch seconds, nan unknown
    attribute_codes: dict[str, np.ndarray]  # attribute -> [n] int32 value code (-1 none)
    freshness_half_life_days: float = 30.0
    trending: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    repeat_rate: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    item_knn: NeighbourTable = field(default_factory=lambda: NeighbourTable.empty(0, 1))
    transitions: NeighbourTable = field(default_factory=lambda: NeighbourTable.empty(0, 1))
    # cold items linked from warm ones, each item's floor (derived when loaded)
    cold_bridge: ColdBridge = field(default_factory=ColdBridge.empty)

    def record_interaction(self, label: int, previous: np.ndarray, amount: float, window: int) -> None:
        """A live positive event on `label` after `previous` (oldest..newest): strengthen the
        item-to-item and transition neighbours by `amount` (1/distance-weighted)."""
        recent = np.asarray(previous, np.int64)[-window:][::-1]
        for distance, other in enumerate(recent.tolist(), start=1):
            if other == label:
                continue
            self.transitions.bump(other, label, amount / distance)
            self.item_knn.bump(other, label, amount / distance)
            self.item_knn.bump(label, other, amount / distance)


def gather(values: np.ndarray, labels: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """values[labels], with `fill` for labels past the end of the table."""
    inside = labels < len(values)
    if inside.all():
        return values[labels]
    out = np.full(len(labels), fill, dtype=values.dtype)
    out[inside] = values[labels[inside]]
    return out


_POSITIONS = threading.local()  # per thread: label -> candidate position (-1: not a candidate)


def _accumulate(labels: np.ndarray, values: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """[C] sum of values whose label is each candidate (candidates unique).

    Through a reused label -> position table (int32 per item and a quarter more for items
    added live, per thread; filled for the candidates and cleared again each call): a gather
    instead of a binary search for each of the values a request reads (~1,600 on Online Retail)."""
    if len(labels) == 0 or len(candidates) == 0:
        return np.zeros(len(candidates), np.float32)
    size = int(max(candidates.max(), labels.max())) + 1
    table = getattr(_POSITIONS, "table", None)
    if table is None or len(table) < size:
        table = _POSITIONS.table = np.full(size + size // 4, -1, np.int32)
    table[candidates] = np.arange(len(candidates), dtype=np.int32)
    try:
        at = table[labels]
    finally:
        table[candidates] = -1
    hit = at >= 0
    return np.bincount(at[hit], weights=values[hit], minlength=len(candidates)).astype(np.float32)


def _lookup(sorted_labels: np.ndarray, values: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """[C] values[label == candidate] (0 where absent) for labels sorted and unique."""
    if len(sorted_labels) == 0:
        return np.zeros(len(candidates), np.float32)
    at = np.minimum(np.searchsorted(sorted_labels, candidates), len(sorted_labels) - 1)
    return np.where(sorted_labels[at] == candidates, values[at], 0.0).astype(np.float32)


def neighbour_scores(table: NeighbourTable, rows: np.ndarray, row_weights: np.ndarray,
                     candidates: np.ndarray,
                     aggregated: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """[C] sum over rows of weight x score(row -> candidate) (from `aggregated` when given)."""
    labels, scores = aggregated if aggregated is not None else table.aggregate(rows, row_weights)
    return _lookup(labels, scores, candidates)


def _sparse_rows_at(matrix: sp.csr_matrix, rows: np.ndarray, row_weights: np.ndarray,
                    candidates: np.ndarray) -> np.ndarray:
    """[C] sum over rows of weight x matrix[row, candidate], reading the CSR arrays directly
    (scipy's fancy indexing costs more than the whole rest of the rank stage)."""
    inside = rows < matrix.shape[0]
    rows, row_weights = rows[inside], row_weights[inside]
    starts, ends = matrix.indptr[rows], matrix.indptr[rows + 1]
    lengths = ends - starts
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(len(candidates), np.float32)
    offsets = np.repeat(starts - np.r_[0, np.cumsum(lengths)[:-1]], lengths) + np.arange(total)
    values = matrix.data[offsets] * np.repeat(row_weights, lengths)
    return _accumulate(matrix.indices[offsets], values, candidates)


def compute_features(
    candidates: np.ndarray,
    retrieval: np.ndarray,
    ctx: RankingContext,
    tables: FeatureTables,
    vectors: np.ndarray,
    source_ranks: np.ndarray | None = None,
    candidate_vectors: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """[C, len(FEATURES)] float32, and the [C, H] history similarity matrix (or None).

    source_ranks: [C, len(SOURCE_NAMES)] int32 rank of each candidate in each source's list
    (0 = best, -1 = not found); None = no provenance (all rank features 0).
    candidate_vectors: vectors[candidates] when the caller has them already.
    """
    n = len(candidates)
    out = np.zeros((n, len(FEATURES)), dtype=np.float32)
    out[:, COLUMN["retrieval"]] = retrieval
    cand_vectors = vectors[candidates] if candidate_vectors is None else candidate_vectors
    if ctx.query_vector is not None:
        out[:, COLUMN["query_similarity"]] = cand_vectors @ ctx.query_vector
    history_sims = None
    if len(ctx.history_labels):
        history = ctx.history_labels
        knn = ctx.neighbour_scores.get("item_knn") or tables.item_knn.aggregate(history, ctx.history_weights)
        head, head_weights = ctx.expectation_head or expectation_head(knn, len(vectors))
        # one product for the history and the likeness head, each distinct item once
        # (repeat purchases and neighbours already in the history are common)
        columns, column_of = np.unique(np.concatenate([history, head]), return_inverse=True)
        sims = cand_vectors @ vectors[columns].T
        history_sims = sims[:, column_of[:len(history)]]  # [C, H]
        out[:, COLUMN["history_max_similarity"]] = history_sims.max(axis=1)
        out[:, COLUMN["history_mean_similarity"]] = history_sims @ ctx.history_weights
        cooc = _sparse_rows_at(tables.cooccurrence, history, ctx.history_weights, candidates)
        out[:, COLUMN["co_occurrence"]] = np.minimum(cooc, 1.0)
        interacted = _history_repeats(candidates, history, out)
        out[:, COLUMN["already_interacted"]] = interacted
        out[:, COLUMN["repeat_purchase"]] = interacted * gather(tables.repeat_rate, candidates)
        out[:, COLUMN["attribute_affinity"]] = _attribute_affinity(candidates, ctx, tables)
        out[:, COLUMN["item_knn"]] = neighbour_scores(tables.item_knn, history, ctx.history_weights,
                                                      candidates, knn)
        if len(head):
            _likeness(candidates, sims[:, column_of[len(history):]], head, head_weights,
                      gather(tables.cold_bridge.floor, candidates, np.inf), out)
        recent = ctx.recent_weights if ctx.recent_weights is not None else transition_weights(len(history))
        out[:, COLUMN["transition"]] = neighbour_scores(
            tables.transitions, history[-len(recent):], recent, candidates,
            ctx.neighbour_scores.get("transitions"))
    out[:, COLUMN["popularity"]] = gather(tables.popularity, candidates)
    out[:, COLUMN["trending"]] = gather(tables.trending, candidates)
    age_days = (ctx.now - gather(tables.created_at, candidates, np.nan)) / 86400.0
    freshness = np.exp(-np.log(2) * np.maximum(age_days, 0) / tables.freshness_half_life_days)
    out[:, COLUMN["freshness"]] = np.where(np.isnan(freshness), 0.0, freshness)  # unknown age: 0
    if len(ctx.disliked_labels):
        disliked = cand_vectors @ vectors[ctx.disliked_labels].T
        out[:, COLUMN["disliked_similarity"]] = np.maximum(disliked.max(axis=1), 0)
    if source_ranks is not None:
        ranks = source_ranks[:, :len(RANKED_SOURCES)]  # columns in SOURCE_NAMES order
        found = ranks >= 0
        out[:, _RANK_COLUMNS] = np.where(found, 1.0 / (1.0 + np.maximum(ranks, 0)), 0.0)
        out[:, COLUMN["source_count"]] = found.sum(axis=1)
    return out, history_sims


def _history_repeats(candidates: np.ndarray, history: np.ndarray, out: np.ndarray) -> np.ndarray:
    """history_count, history_recency (per candidate), user_repeat_share, history_size; returns
    which candidates are in the history (already_interacted)."""
    n = len(history)
    items, newest_reversed, counts = np.unique(history[::-1], return_index=True, return_counts=True)
    newest = n - 1 - newest_reversed  # the last position of each
    at = np.minimum(np.searchsorted(items, candidates), len(items) - 1)
    inside = items[at] == candidates
    out[:, COLUMN["history_count"]] = np.where(inside, counts[at] / n, 0.0)
    out[:, COLUMN["history_recency"]] = np.where(inside, 1.0 / (n - newest[at]), 0.0)
    out[:, COLUMN["user_repeat_share"]] = (n - len(items)) / max(n - 1, 1)
    out[:, COLUMN["history_size"]] = np.log1p(n)
    return inside


def _likeness(candidates: np.ndarray, head_sims: np.ndarray, head: np.ndarray,
              head_weights: np.ndarray, floor: np.ndarray, out: np.ndarray) -> None:
    """neighbour_likeness and bridge_likeness (module docstring) into `out`: head_sims are the
    candidates' cosines to the head items of expectation_head, floor each candidate's
    nearest-warm floor (server/retrieval/sources/cold_bridge.py)."""
    likeness = np.maximum(head_sims, 0.0) * head_weights
    likeness[candidates[:, None] == head[None, :]] = 0.0  # like itself says nothing
    out[:, COLUMN["neighbour_likeness"]] = likeness.max(axis=1)
    out[:, COLUMN["bridge_likeness"]] = np.where(head_sims >= floor[:, None], likeness, 0.0).sum(axis=1)


TRANSITION_ITEMS = 3  # "often bought after X": the last few items, newest weighing most


def transition_weights(history_length: int, items: int = TRANSITION_ITEMS) -> np.ndarray:
    """Weights of the newest `items` history items for transitions (oldest..newest; 1/distance)."""
    count = min(history_length, items)
    return (1.0 / np.arange(count, 0, -1)).astype(np.float32)


def _attribute_affinity(candidates: np.ndarray, ctx: RankingContext, tables: FeatureTables) -> np.ndarray:
    """Mean over attributes of the history's (recency-weighted) share of the item's value."""
    if not tables.attribute_codes:
        return np.zeros(len(candidates), np.float32)
    total = np.zeros(len(candidates), np.float32)
    for codes in tables.attribute_codes.values():
        hist_codes = gather(codes, ctx.history_labels, -1)
        known = hist_codes >= 0
        if not known.any():
            continue
        # as long as the history's largest code (not the catalog's: no O(items) pass a request)
        histogram = np.bincount(hist_codes[known], weights=ctx.history_weights[known])
        histogram /= max(histogram.sum(), 1e-12)
        cand_codes = gather(codes, candidates, -1)
        seen = (cand_codes >= 0) & (cand_codes < len(histogram))
        total += np.where(seen, histogram[np.minimum(cand_codes, len(histogram) - 1)], 0.0)
    return total / len(tables.attribute_codes)
