"""Size limits on strings and repeated fields, the response-size guard, and malformed bytes."""

from __future__ import annotations

import logging
import time

import grpc
import pytest

from protos import recommender_pb2 as pb

BIG_ID = "x" * (1 << 20)  # 1 MB


async def refused(call, request, field: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    details = err.value.details()
    assert field in details and len(details) < 300, details  # names the field, never echoes the value
    return details


@pytest.mark.parametrize("request_, field", [
    (pb.RecommendRequest(user_id=BIG_ID), "user_id"),
    (pb.RecommendRequest(history=["85123A", BIG_ID]), "history[1]"),
    (pb.RecommendRequest(query="lamp", filter=pb.Filter(exclude_item_ids=[BIG_ID])), "filter.exclude_item_ids[0]"),
    (pb.RecommendRequest(query="lamp", filter=pb.Filter(attribute_equals={f"k{i}": "v" for i in range(100)})),
     "filter.attribute_equals"),
    (pb.RecommendRequest(query="lamp", filter=pb.Filter(attribute_equals={"country": BIG_ID})),
     "filter.attribute_equals"),
    (pb.RecommendRequest(query="lamp", filter=pb.Filter(attribute_in={"c": pb.StringList(values=["a", BIG_ID])})),
     "filter.attribute_in"),
])
async def test_recommend_limits_name_the_field(running_server, request_, field):
    _, stub, _ = running_server
    await refused(stub.Recommend, request_, field)


async def test_batch_limits_name_the_request(running_server):
    _, stub, _ = running_server
    batch = pb.RecommendBatchRequest(requests=[pb.RecommendRequest(query="a"), pb.RecommendRequest(user_id=BIG_ID)])
    await refused(stub.RecommendBatch, batch, "requests[1].user_id")


async def test_a_batch_whose_answer_cannot_fit_is_refused_before_computing(running_server):
    server, stub, _ = running_server
    batch = pb.RecommendBatchRequest(requests=[
        pb.RecommendRequest(query=f"heavy query {i}", k=1000, diversity=1.0, explain=True) for i in range(64)])
    started = time.monotonic()
    details = await refused(stub.RecommendBatch, batch, "message limit")
    assert time.monotonic() - started < 1.0, "refused only after computing"
    assert f"{server.config.max_message_bytes:,}" in details
    # the same batch at a size that fits is answered
    small = pb.RecommendBatchRequest(requests=[pb.RecommendRequest(query=f"q {i}", k=5) for i in range(8)])
    assert len((await stub.RecommendBatch(small, timeout=30)).responses) == 8


@pytest.mark.parametrize("method, request_, field", [
    ("UpsertItems", pb.UpsertItemsRequest(items=[pb.Item(item_id=BIG_ID, title="t")]), "items[0].item_id"),
    ("UpsertItems", pb.UpsertItemsRequest(items=[pb.Item(item_id="n1", title="t" * 5000)]), "items[0].title"),
    ("UpsertItems", pb.UpsertItemsRequest(items=[
        pb.Item(item_id="n1", title="t", attributes={f"a{i}": "v" for i in range(20000)})]), "items[0].attributes"),
    ("UpsertItems", pb.UpsertItemsRequest(items=[
        pb.Item(item_id="n1", title="t", attributes={"a" * 1000: "v"})]), "items[0].attributes"),
    ("DeleteItems", pb.DeleteItemsRequest(item_ids=["a", BIG_ID]), "item_ids[1]"),
    ("RecordInteractions", pb.RecordInteractionsRequest(events=[
        pb.Interaction(user_id=BIG_ID, item_id="85123A", event="view")]), "events[0].user_id"),
    ("RecordInteractions", pb.RecordInteractionsRequest(events=[
        pb.Interaction(user_id="u", item_id="85123A", event="e" * 500)]), "events[0].event"),
])
async def test_write_limits_name_the_field(running_server, method, request_, field):
    server, stub, _ = running_server
    before = server.last_applied_sequence
    await refused(getattr(stub, method), request_, field)
    assert server.last_applied_sequence == before  # nothing was logged


async def test_malformed_bytes_are_invalid_argument_with_one_log_line(running_server, caplog):
    server, stub, channel = running_server
    raw = channel.unary_unary("/recserve.v1.Recommender/Recommend",
                              request_serializer=None, response_deserializer=None)
    not_protobuf = b"\xff\xff\xff\xff"
    bad_utf8 = b"\x0a\x02\xff\xfe"  # field 1 (query), 2 bytes that are not UTF-8
    with caplog.at_level(logging.WARNING):
        for i in range(50):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await raw(not_protobuf if i % 2 else bad_utf8, timeout=5)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "Error" not in err.value.details() and "could not be parsed" in err.value.details()
    lines = [r for r in caplog.records if "unparseable" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert not any(r.exc_info for r in caplog.records)  # no traceback per call
    assert (await stub.Recommend(pb.RecommendRequest(query="lamp", k=2), timeout=10)).items
    counted = server.metrics.requests.labels("Recommend", "INVALID_ARGUMENT")._value.get()
    assert counted >= 50
