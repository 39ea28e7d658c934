"""The Ray ingress's answer when an engine replica dies or Ray refuses (a fake handle stands
in for the engine deployment; tests/server/test_ray_serve.py kills a real replica)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from ray.exceptions import ActorDiedError
from ray.serve.exceptions import BackPressureError

from protos import recommender_pb2 as pb
from server.ray_serve.ingress import RecommenderIngress
from server.ray_serve.rpcs import CallFailed


class _Method:
    def __init__(self, outcomes: list) -> None:
        self.outcomes, self.calls = outcomes, 0

    async def remote(self, *args):
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


class _Engine:
    def __init__(self, outcomes: list) -> None:
        self.call = _Method(outcomes)


class _Context:
    def __init__(self) -> None:
        self.code, self.details = None, None

    def set_code(self, code) -> None:
        self.code = code

    def set_details(self, details) -> None:
        self.details = details


OK = grpc.StatusCode.OK.value[0]


def _run(ingress, method, request, context):
    return asyncio.run(getattr(ingress, method)(request, context))


def test_a_read_whose_replica_died_is_answered_by_another():
    answer = pb.RecommendResponse(bundle_version="v")
    engine = _Engine([ActorDiedError(), (answer, OK, "")])
    context = _Context()
    assert _run(RecommenderIngress(engine), "Recommend", pb.RecommendRequest(query="x"), context) == answer
    assert engine.call.calls == 2 and context.code is None


def test_a_write_whose_replica_died_is_unavailable_not_sent_twice():
    engine = _Engine([ActorDiedError(), (pb.WriteResponse(), OK, "")])
    context = _Context()
    with pytest.raises(CallFailed):
        _run(RecommenderIngress(engine), "UpsertItems", pb.UpsertItemsRequest(), context)
    assert engine.call.calls == 1
    assert context.code == grpc.StatusCode.UNAVAILABLE and "request_id" in context.details


def test_reads_give_up_as_unavailable_and_back_pressure_is_resource_exhausted():
    context = _Context()
    with pytest.raises(CallFailed):
        _run(RecommenderIngress(_Engine([ActorDiedError()] * 3)), "Embed", pb.EmbedRequest(), context)
    assert context.code == grpc.StatusCode.UNAVAILABLE
    context = _Context()
    with pytest.raises(CallFailed):
        _run(RecommenderIngress(_Engine([BackPressureError(num_queued_requests=1, max_queued_requests=1)])),
             "Recommend", pb.RecommendRequest(), context)
    assert context.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_the_engine_status_is_set_on_the_proxy_context():
    engine = _Engine([(None, grpc.StatusCode.INVALID_ARGUMENT.value[0], "k: too large")])
    context = _Context()
    with pytest.raises(CallFailed):
        _run(RecommenderIngress(engine), "Recommend", pb.RecommendRequest(), context)
    assert (context.code, context.details) == (grpc.StatusCode.INVALID_ARGUMENT, "k: too large")
