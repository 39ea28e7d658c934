"""Bounded fuzzing over real gRPC: random bytes and random well-formed messages to every method
answer only with the codes a client can act on (bench/fuzz.py runs the long version)."""

from __future__ import annotations

import signal

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protos import recommender_pb2 as pb
from tests.server.serve_process import ServeProcess

ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
           grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND}
METHODS = ["Recommend", "RecommendBatch", "Embed", "GetInfo", "UpsertItems", "DeleteItems", "RecordInteractions"]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])


@pytest.fixture(scope="module")
def fuzz_target(small_bundle, tmp_path_factory):
    """A real `recserve serve` (live writes on) and a channel sending raw bytes to any method."""
    server = ServeProcess(small_bundle, tmp_path_factory.mktemp("fuzz") / "live")
    try:
        port = server.wait_serving()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            calls = {m: channel.unary_unary(f"/recserve.v1.Recommender/{m}") for m in METHODS}
            yield calls, channel
        server.process.send_signal(signal.SIGTERM)
        assert server.wait() == 0
    finally:
        server.kill()


def code_of(call, payload: bytes) -> grpc.StatusCode:
    try:
        call(payload, timeout=5)
        return grpc.StatusCode.OK
    except grpc.RpcError as err:
        return err.code()


texts = st.text(max_size=60) | st.text(min_size=3000, max_size=3100) | st.sampled_from(["", " ", "85123A", "lamp"])
ids = st.lists(texts, max_size=6)
recommend = st.builds(
    pb.RecommendRequest, query=texts, user_id=texts, history=ids,
    k=st.integers(-(2**31), 2**31 - 1) | st.integers(0, 20),
    diversity=st.floats(-2, 2, width=32) | st.sampled_from([float("nan"), float("inf")]), explain=st.booleans(),
    filter=st.builds(pb.Filter, attribute_equals=st.dictionaries(texts, texts, max_size=4),
                     exclude_item_ids=ids, exclude_interacted=st.booleans()),
    min_sequence=st.sampled_from([0, 0, 1]))  # one past the log would wait out the whole deadline
messages = st.one_of(
    st.tuples(st.just("Recommend"), recommend),
    st.tuples(st.just("RecommendBatch"), st.builds(pb.RecommendBatchRequest, requests=st.lists(recommend, max_size=4))),
    st.tuples(st.just("Embed"), st.builds(pb.EmbedRequest, texts=ids)),
    st.tuples(st.just("GetInfo"), st.builds(pb.GetInfoRequest)),
    st.tuples(st.just("UpsertItems"), st.builds(pb.UpsertItemsRequest, items=st.lists(st.builds(
        pb.Item, item_id=texts, title=texts, text=texts, attributes=st.dictionaries(texts, texts, max_size=3)),
        max_size=3), request_id=texts)),
    st.tuples(st.just("DeleteItems"), st.builds(pb.DeleteItemsRequest, item_ids=ids, request_id=texts)),
    st.tuples(st.just("RecordInteractions"), st.builds(pb.RecordInteractionsRequest, events=st.lists(st.builds(
        pb.Interaction, user_id=texts, item_id=texts, event=texts | st.sampled_from(["view", "purchase"]),
        weight=st.floats(width=32, allow_nan=True), timestamp_ms=st.integers(-(2**62), 2**62)), max_size=4))),
)


@FUZZ
@given(method=st.sampled_from(METHODS), payload=st.binary(max_size=512))
def test_random_bytes_get_only_actionable_codes(fuzz_target, method, payload):
    calls, _ = fuzz_target
    assert code_of(calls[method], payload) in ALLOWED


@FUZZ
@given(message=messages, cut=st.integers(0, 64))
def test_random_messages_and_truncations_get_only_actionable_codes(fuzz_target, message, cut):
    calls, _ = fuzz_target
    method, request = message
    payload = request.SerializeToString()
    assert code_of(calls[method], payload) in ALLOWED
    if cut and len(payload) > cut:
        assert code_of(calls[method], payload[:-cut]) in ALLOWED


def test_the_server_is_still_serving_after_the_fuzzing(fuzz_target):
    _, channel = fuzz_target
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
