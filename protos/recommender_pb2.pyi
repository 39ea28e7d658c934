from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Filter(_message.Message):
    __slots__ = ("attribute_equals", "attribute_in", "exclude_item_ids", "exclude_interacted")
    class AttributeEqualsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class AttributeInEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: StringList
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[StringList, _Mapping]] = ...) -> None: ...
    ATTRIBUTE_EQUALS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTE_IN_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_INTERACTED_FIELD_NUMBER: _ClassVar[int]
    attribute_equals: _containers.ScalarMap[str, str]
    attribute_in: _containers.MessageMap[str, StringList]
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[str]
    exclude_interacted: bool
    def __init__(self, attribute_equals: _Optional[_Mapping[str, str]] = ..., attribute_in: _Optional[_Mapping[str, StringList]] = ..., exclude_item_ids: _Optional[_Iterable[str]] = ..., exclude_interacted: _Optional[bool] = ...) -> None: ...

class StringList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class RecommendRequest(_message.Message):
    __slots__ = ("query", "user_id", "history", "k", "filter", "diversity", "explain", "min_sequence")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    DIVERSITY_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    MIN_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    query: str
    user_id: str
    history: _containers.RepeatedScalarFieldContainer[str]
    k: int
    filter: Filter
    diversity: float
    explain: bool
    min_sequence: int
    def __init__(self, query: _Optional[str] = ..., user_id: _Optional[str] = ..., history: _Optional[_Iterable[str]] = ..., k: _Optional[int] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., diversity: _Optional[float] = ..., explain: _Optional[bool] = ..., min_sequence: _Optional[int] = ...) -> None: ...

class FeatureContribution(_message.Message):
    __slots__ = ("feature", "value", "weight", "contribution")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    feature: str
    value: float
    weight: float
    contribution: float
    def __init__(self, feature: _Optional[str] = ..., value: _Optional[float] = ..., weight: _Optional[float] = ..., contribution: _Optional[float] = ...) -> None: ...

class ScoredItem(_message.Message):
    __slots__ = ("item_id", "title", "score", "retrieval_score", "contributions", "reason", "sources")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_SCORE_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    title: str
    score: float
    retrieval_score: float
    contributions: _containers.RepeatedCompositeFieldContainer[FeatureContribution]
    reason: str
    sources: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, item_id: _Optional[str] = ..., title: _Optional[str] = ..., score: _Optional[float] = ..., retrieval_score: _Optional[float] = ..., contributions: _Optional[_Iterable[_Union[FeatureContribution, _Mapping]]] = ..., reason: _Optional[str] = ..., sources: _Optional[_Iterable[str]] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("queue_us", "encode_us", "retrieve_us", "rank_us", "total_us", "worker_id")
    QUEUE_US_FIELD_NUMBER: _ClassVar[int]
    ENCODE_US_FIELD_NUMBER: _ClassVar[int]
    RETRIEVE_US_FIELD_NUMBER: _ClassVar[int]
    RANK_US_FIELD_NUMBER: _ClassVar[int]
    TOTAL_US_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    queue_us: int
    encode_us: int
    retrieve_us: int
    rank_us: int
    total_us: int
    worker_id: str
    def __init__(self, queue_us: _Optional[int] = ..., encode_us: _Optional[int] = ..., retrieve_us: _Optional[int] = ..., rank_us: _Optional[int] = ..., total_us: _Optional[int] = ..., worker_id: _Optional[str] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("items", "bundle_version", "timings")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ScoredItem]
    bundle_version: str
    timings: Timings
    def __init__(self, items: _Optional[_Iterable[_Union[ScoredItem, _Mapping]]] = ..., bundle_version: _Optional[str] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ...) -> None: ...

class RecommendBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[RecommendRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[RecommendRequest, _Mapping]]] = ...) -> None: ...

class RecommendBatchResponse(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[RecommendResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[RecommendResponse, _Mapping]]] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("texts",)
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, texts: _Optional[_Iterable[str]] = ...) -> None: ...

class Embedding(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("embeddings", "dim", "bundle_version", "timings")
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    dim: int
    bundle_version: str
    timings: Timings
    def __init__(self, embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ..., dim: _Optional[int] = ..., bundle_version: _Optional[str] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ...) -> None: ...

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetInfoResponse(_message.Message):
    __slots__ = ("bundle_version", "model", "precision", "dim", "max_length", "index_size", "live_items", "execution_provider", "manifest_json", "last_applied_sequence")
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    INDEX_SIZE_FIELD_NUMBER: _ClassVar[int]
    LIVE_ITEMS_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    LAST_APPLIED_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    bundle_version: str
    model: str
    precision: str
    dim: int
    max_length: int
    index_size: int
    live_items: int
    execution_provider: str
    manifest_json: str
    last_applied_sequence: int
    def __init__(self, bundle_version: _Optional[str] = ..., model: _Optional[str] = ..., precision: _Optional[str] = ..., dim: _Optional[int] = ..., max_length: _Optional[int] = ..., index_size: _Optional[int] = ..., live_items: _Optional[int] = ..., execution_provider: _Optional[str] = ..., manifest_json: _Optional[str] = ..., last_applied_sequence: _Optional[int] = ...) -> None: ...

class Item(_message.Message):
    __slots__ = ("item_id", "title", "text", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    title: str
    text: str
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, item_id: _Optional[str] = ..., title: _Optional[str] = ..., text: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class UpsertItemsRequest(_message.Message):
    __slots__ = ("items", "request_id")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Item]
    request_id: str
    def __init__(self, items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteItemsRequest(_message.Message):
    __slots__ = ("item_ids", "request_id")
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    request_id: str
    def __init__(self, item_ids: _Optional[_Iterable[str]] = ..., request_id: _Optional[str] = ...) -> None: ...

class Interaction(_message.Message):
    __slots__ = ("user_id", "item_id", "event", "weight", "timestamp_ms")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    item_id: str
    event: str
    weight: float
    timestamp_ms: int
    def __init__(self, user_id: _Optional[str] = ..., item_id: _Optional[str] = ..., event: _Optional[str] = ..., weight: _Optional[float] = ..., timestamp_ms: _Optional[int] = ...) -> None: ...

class RecordInteractionsRequest(_message.Message):
    __slots__ = ("events", "request_id")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Interaction]
    request_id: str
    def __init__(self, events: _Optional[_Iterable[_Union[Interaction, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class WriteResponse(_message.Message):
    __slots__ = ("sequence", "applied", "duplicate")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    applied: int
    duplicate: bool
    def __init__(self, sequence: _Optional[int] = ..., applied: _Optional[int] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class ReloadRequest(_message.Message):
    __slots__ = ("bundle_path",)
    BUNDLE_PATH_FIELD_NUMBER: _ClassVar[int]
    bundle_path: str
    def __init__(self, bundle_path: _Optional[str] = ...) -> None: ...

class ReloadResponse(_message.Message):
    __slots__ = ("previous_version", "bundle_version", "replayed_writes")
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_WRITES_FIELD_NUMBER: _ClassVar[int]
    previous_version: str
    bundle_version: str
    replayed_writes: int
    def __init__(self, previous_version: _Optional[str] = ..., bundle_version: _Optional[str] = ..., replayed_writes: _Optional[int] = ...) -> None: ...
