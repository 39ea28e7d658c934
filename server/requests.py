"""Recommend requests and results as plain domain objects, with the API's limits enforced."""

from __future__ import annotations

from dataclasses import dataclass, field

from export.settings import RecserveSettings, settings_config
from server.errors import InvalidRequest


class LimitsConfig(RecserveSettings):
    model_config = settings_config("limits")

    max_k: int = 1000
    """Largest k a request may ask for."""
    default_k: int = 10
    """k when a request leaves it at 0."""
    max_query_chars: int = 2000
    """Longest query text accepted (longer texts are refused, not silently cut)."""
    max_history: int = 50
    """Most item ids a request's history may carry (longer is refused, not silently cut).
    The engine uses the newest `features.parameters.history_length` items (the bundle's
    manifest, 50 by default) of the user's stored history plus this one: keep them equal."""
    max_batch_requests: int = 256
    """Most requests in one RecommendBatch call."""
    max_embed_texts: int = 256
    """Most texts in one Embed call."""
    max_filter_values: int = 1000
    """Most values across a request's filter (attribute values and excluded ids)."""
    max_id_chars: int = 256
    """Longest item id or user id accepted anywhere (history, filters, writes)."""
    max_title_chars: int = 1000
    """Longest item title accepted by UpsertItems."""
    max_attributes: int = 64
    """Most attributes one item (or one filter) may carry."""
    max_attribute_key_chars: int = 128
    """Longest attribute name accepted."""
    max_attribute_value_chars: int = 1000
    """Longest attribute value accepted."""
    max_event_name_chars: int = 64
    """Longest interaction event name accepted (the known names are short)."""
    response_item_overhead_bytes: int = 64
    """Encoded size of one recommended item besides its id and title (scores, reason, sources),
    used to refuse a RecommendBatch whose answer could not fit in the message limit."""
    explanation_bytes: int = 1024
    """Encoded size of one item's explanation (feature contributions), for the same estimate."""


@dataclass(frozen=True)
class RecommendQuery:
    query: str = ""
    user_id: str = ""
    history: tuple[str, ...] = ()
    k: int = 10
    attribute_equals: dict[str, str] = field(default_factory=dict)
    attribute_in: dict[str, tuple[str, ...]] = field(default_factory=dict)
    exclude_item_ids: tuple[str, ...] = ()
    exclude_interacted: bool = False
    diversity: float = 0.0
    explain: bool = False

    def validated(self, limits: LimitsConfig) -> "RecommendQuery":
        """This request with k defaulted, or InvalidRequest saying what is wrong."""
        if not (self.query.strip() or self.user_id or self.history):
            raise InvalidRequest("give at least one of query, user_id or history")
        k = self.k or limits.default_k
        if not 1 <= k <= limits.max_k:
            raise InvalidRequest(f"k must be between 1 and {limits.max_k}, got {self.k}")
        if len(self.query) > limits.max_query_chars:
            raise InvalidRequest(f"query is longer than {limits.max_query_chars} characters")
        if len(self.history) > limits.max_history:
            raise InvalidRequest(f"history has more than {limits.max_history} items")
        if not 0.0 <= self.diversity <= 1.0:
            raise InvalidRequest(f"diversity must be between 0 and 1, got {self.diversity}")
        n_values = len(self.exclude_item_ids) + len(self.attribute_equals) + sum(
            len(v) for v in self.attribute_in.values())
        if n_values > limits.max_filter_values:
            raise InvalidRequest(f"filter has more than {limits.max_filter_values} values")
        if k == self.k:
            return self
        return RecommendQuery(**{**self.__dict__, "k": k})


@dataclass
class ScoredResult:
    item_id: str
    title: str
    score: float
    retrieval_score: float
    contributions: list = field(default_factory=list)
    reason: str = ""
    sources: list[str] = field(default_factory=list)  # candidate sources that found it, best rank first


@dataclass
class StageTimings:
    queue_us: int = 0
    encode_us: int = 0
    retrieve_us: int = 0
    rank_us: int = 0
    total_us: int = 0


@dataclass
class RecommendResult:
    items: list[ScoredResult]
    bundle_version: str
    timings: StageTimings
