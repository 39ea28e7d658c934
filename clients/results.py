"""Typed values the clients take and return, and their conversion to and from the protobufs.

Callers work with these frozen dataclasses; `raw=True` on a client method returns the
protobuf instead, for callers that forward it unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from protos import recommender_pb2 as pb

MAX_K = 1000


# ---- requests ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ItemFilter:
    """Restrictions on the recommended items."""

    attribute_equals: Mapping[str, str] = field(default_factory=dict)
    """Attribute name -> value the item must have."""
    attribute_in: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """Attribute name -> allowed values."""
    exclude_item_ids: Sequence[str] = ()
    """Items never to return."""
    exclude_interacted: bool = False
    """Drop items the user (user_id) already interacted with."""

    def to_pb(self) -> pb.Filter:
        message = pb.Filter(
            attribute_equals=dict(self.attribute_equals),
            exclude_item_ids=list(self.exclude_item_ids),
            exclude_interacted=self.exclude_interacted,
        )
        for name, values in self.attribute_in.items():
            message.attribute_in[name].values.extend(values)
        return message


def recommend_request(query: str | None = None, *, user_id: str | None = None,
                      history: Sequence[str] = (), k: int = 10, filter: ItemFilter | None = None,
                      diversity: float = 0.0, explain: bool = False) -> pb.RecommendRequest:
    """A RecommendRequest, checked for the mistakes a caller can see without the server."""
    if not (query or user_id or history):
        raise ValueError("give at least one of query, user_id or history")
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k must be within 1..{MAX_K}, got {k}")
    if not 0.0 <= diversity <= 1.0:
        raise ValueError(f"diversity must be within 0..1, got {diversity}")
    return pb.RecommendRequest(
        query=query or "", user_id=user_id or "", history=list(history), k=k,
        filter=filter.to_pb() if filter else None, diversity=diversity, explain=explain,
    )


@dataclass(frozen=True)
class Item:
    """A catalog item to insert or replace."""

    item_id: str
    title: str
    text: str = ""
    """Text the encoder embeds; the server falls back to the title when empty."""
    attributes: Mapping[str, str] = field(default_factory=dict)

    def to_pb(self) -> pb.Item:
        return pb.Item(item_id=self.item_id, title=self.title, text=self.text,
                       attributes=dict(self.attributes))


@dataclass(frozen=True)
class Interaction:
    """One event of a user with an item."""

    user_id: str
    item_id: str
    event: str = "purchase"
    """view, click, purchase, dislike or not_interested."""
    weight: float = 0.0
    """0 means the event's default weight."""
    timestamp_ms: int = 0
    """0 means the server's receive time."""

    def to_pb(self) -> pb.Interaction:
        return pb.Interaction(user_id=self.user_id, item_id=self.item_id, event=self.event,
                              weight=self.weight, timestamp_ms=self.timestamp_ms)


def as_pb_list(values: Iterable[Any]) -> list[Any]:
    """Dataclasses converted with to_pb(); protobufs passed through."""
    return [v.to_pb() if hasattr(v, "to_pb") else v for v in values]


# ---- responses --------------------------------------------------------------------------

@dataclass(frozen=True)
class ServerTimings:
    """Time the server spent per stage, in microseconds."""

    queue_us: int
    encode_us: int
    retrieve_us: int
    rank_us: int
    total_us: int

    @classmethod
    def from_pb(cls, t: pb.Timings) -> ServerTimings:
        return cls(t.queue_us, t.encode_us, t.retrieve_us, t.rank_us, t.total_us)

    def stages(self) -> dict[str, int]:
        return {"queue": self.queue_us, "encode": self.encode_us,
                "retrieve": self.retrieve_us, "rank": self.rank_us, "total": self.total_us}


@dataclass(frozen=True)
class FeatureContribution:
    """One ranking feature's share of an item's score (explain)."""

    feature: str
    value: float
    weight: float
    contribution: float


@dataclass(frozen=True)
class ScoredItem:
    item_id: str
    title: str
    score: float
    """Final ranking score."""
    retrieval_score: float
    """Similarity from the index, before reranking."""
    contributions: tuple[FeatureContribution, ...] = ()
    """Feature contributions, only when explain was asked."""
    reason: str = ""
    """Human-readable reason, only when explain was asked."""
    sources: tuple[str, ...] = ()
    """Candidate sources that found the item (content, item_knn, popular, ...)."""

    @classmethod
    def from_pb(cls, m: pb.ScoredItem) -> ScoredItem:
        contributions = tuple(FeatureContribution(c.feature, c.value, c.weight, c.contribution)
                              for c in m.contributions)
        return cls(m.item_id, m.title, m.score, m.retrieval_score, contributions, m.reason, tuple(m.sources))


@dataclass(frozen=True)
class Recommendation:
    items: tuple[ScoredItem, ...]
    bundle_version: str
    timings: ServerTimings
    latency_s: float = 0.0
    """Wall time of the call as the client saw it, retries included."""

    @classmethod
    def from_pb(cls, m: pb.RecommendResponse, latency_s: float = 0.0) -> Recommendation:
        return cls(tuple(ScoredItem.from_pb(i) for i in m.items), m.bundle_version,
                   ServerTimings.from_pb(m.timings), latency_s)

    @property
    def item_ids(self) -> list[str]:
        return [i.item_id for i in self.items]


@dataclass(frozen=True)
class Embeddings:
    vectors: np.ndarray
    """float32 [len(texts), dim], L2-normalised."""
    dim: int
    bundle_version: str
    timings: ServerTimings

    @classmethod
    def from_pb(cls, m: pb.EmbedResponse) -> Embeddings:
        vectors = np.array([e.values for e in m.embeddings], dtype=np.float32).reshape(-1, m.dim)
        return cls(vectors, m.dim, m.bundle_version, ServerTimings.from_pb(m.timings))


@dataclass(frozen=True)
class Info:
    """What the server is serving."""

    bundle_version: str
    model: str
    precision: str
    dim: int
    max_length: int
    index_size: int
    live_items: int
    execution_provider: str
    last_applied_sequence: int
    manifest: dict[str, Any]
    """The bundle manifest, parsed."""

    @classmethod
    def from_pb(cls, m: pb.GetInfoResponse) -> Info:
        manifest = json.loads(m.manifest_json) if m.manifest_json else {}
        return cls(m.bundle_version, m.model, m.precision, m.dim, m.max_length, m.index_size,
                   m.live_items, m.execution_provider, m.last_applied_sequence, manifest)


@dataclass(frozen=True)
class WriteResult:
    sequence: int
    """Position of the write in the server's write-ahead log (monotonic)."""
    applied: int
    """Items or events the write contained."""
    duplicate: bool = False
    """True when the request_id was seen before: the first attempt's sequence, nothing applied again."""

    @classmethod
    def from_pb(cls, m: pb.WriteResponse) -> WriteResult:
        return cls(m.sequence, m.applied, m.duplicate)


@dataclass(frozen=True)
class ReloadResult:
    previous_version: str
    bundle_version: str
    replayed_writes: int

    @classmethod
    def from_pb(cls, m: pb.ReloadResponse) -> ReloadResult:
        return cls(m.previous_version, m.bundle_version, m.replayed_writes)
