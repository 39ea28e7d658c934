"""Size limits on every string and repeated field of a request, checked on the protobuf message
before anything is converted, embedded or logged.

Each refusal is an InvalidRequest naming the field (`requests[3].history[7]`) and the limit,
never echoing the oversized value. Counts per write call come from LiveConfig (the live
writer enforces the same numbers); string and attribute sizes from LimitsConfig.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from protos import recommender_pb2 as pb
from server.errors import InvalidRequest
from server.live.config import LiveConfig
from server.requests import LimitsConfig


def _text(value: str, limit: int, field: str) -> None:
    if len(value) > limit:
        raise InvalidRequest(f"{field} is longer than {limit} characters")


def _ids(values: Iterable[str], limit: int, field: str) -> None:
    for i, value in enumerate(values):
        if len(value) > limit:
            raise InvalidRequest(f"{field}[{i}] is longer than {limit} characters")


def _count(n: int, limit: int, field: str) -> None:
    if n > limit:
        raise InvalidRequest(f"{field} has more than {limit} entries ({n})")


def _attributes(attributes: Mapping[str, object], limits: LimitsConfig, field: str) -> None:
    _count(len(attributes), limits.max_attributes, field)
    for key, value in attributes.items():
        if len(key) > limits.max_attribute_key_chars:
            raise InvalidRequest(f"{field} has a key longer than {limits.max_attribute_key_chars} characters")
        values = value.values if isinstance(value, pb.StringList) else (value,)
        for v in values:
            if len(v) > limits.max_attribute_value_chars:
                raise InvalidRequest(f"{field}[{key[:40]!r}] has a value longer than "
                                     f"{limits.max_attribute_value_chars} characters")


def validate_recommend(request: pb.RecommendRequest, limits: LimitsConfig, field: str = "") -> None:
    """Ids, history, filter keys and values of one RecommendRequest (query text and k are
    checked with the domain query)."""
    _text(request.query, limits.max_query_chars, f"{field}query")
    _text(request.user_id, limits.max_id_chars, f"{field}user_id")
    _count(len(request.history), limits.max_history, f"{field}history")
    _ids(request.history, limits.max_id_chars, f"{field}history")
    f = request.filter
    _count(len(f.exclude_item_ids), limits.max_filter_values, f"{field}filter.exclude_item_ids")
    _ids(f.exclude_item_ids, limits.max_id_chars, f"{field}filter.exclude_item_ids")
    _attributes(f.attribute_equals, limits, f"{field}filter.attribute_equals")
    _attributes(f.attribute_in, limits, f"{field}filter.attribute_in")


def validate_batch(request: pb.RecommendBatchRequest, limits: LimitsConfig, max_message_bytes: int) -> None:
    """Every request of the batch, and that the answer can fit in one message."""
    _count(len(request.requests), limits.max_batch_requests, "requests")
    for i, r in enumerate(request.requests):
        validate_recommend(r, limits, f"requests[{i}].")
    check_response_fits(request.requests, limits, max_message_bytes)


def response_item_bytes(limits: LimitsConfig, explain: bool) -> int:
    """Upper estimate of one recommended item's encoded size."""
    size = limits.response_item_overhead_bytes + limits.max_id_chars + limits.max_title_chars
    return size + (limits.explanation_bytes if explain else 0)


def check_response_fits(requests: Iterable[pb.RecommendRequest], limits: LimitsConfig,
                        max_message_bytes: int) -> None:
    """Refuse before computing a batch whose k x requests could exceed the response limit."""
    estimate = sum(min(r.k or limits.default_k, limits.max_k) * response_item_bytes(limits, r.explain)
                   for r in requests)
    if estimate > max_message_bytes:
        raise InvalidRequest(
            f"the answer could reach {estimate:,} bytes, over the {max_message_bytes:,}-byte message "
            f"limit (sum of k over the batch, about {response_item_bytes(limits, False):,} bytes per item, "
            f"more with explain): split the batch or ask for fewer items")


def validate_upsert(request: pb.UpsertItemsRequest, limits: LimitsConfig, live: LiveConfig) -> None:
    _count(len(request.items), live.max_items_per_write, "items")
    for i, item in enumerate(request.items):
        _text(item.item_id, limits.max_id_chars, f"items[{i}].item_id")
        _text(item.title, limits.max_title_chars, f"items[{i}].title")
        _text(item.text, live.max_text_chars, f"items[{i}].text")
        _attributes(item.attributes, limits, f"items[{i}].attributes")


def validate_delete(request: pb.DeleteItemsRequest, limits: LimitsConfig, live: LiveConfig) -> None:
    _count(len(request.item_ids), live.max_items_per_write, "item_ids")
    _ids(request.item_ids, limits.max_id_chars, "item_ids")


def validate_interactions(request: pb.RecordInteractionsRequest, limits: LimitsConfig,
                          live: LiveConfig) -> None:
    _count(len(request.events), live.max_events_per_write, "events")
    for i, e in enumerate(request.events):
        _text(e.user_id, limits.max_id_chars, f"events[{i}].user_id")
        _text(e.item_id, limits.max_id_chars, f"events[{i}].item_id")
        _text(e.event, limits.max_event_name_chars, f"events[{i}].event")
