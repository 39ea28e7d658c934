"""Admission at the door: refuse at once when full, never refuse health checks, count every call."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos import recommender_pb2 as pb
from protos import recommender_pb2_grpc


@pytest.fixture
async def narrow_server(small_bundle, tmp_path):
    """A door of 2 calls, and inference that hangs while the fault file exists."""
    from server.batching.batcher import BatcherConfig
    from server.live.config import LiveConfig
    from server.service.app import AllConfigs, ServerConfig, create_server

    fault = tmp_path / "fault"
    configs = AllConfigs(server=ServerConfig(metrics_port=-1, max_concurrent_calls=2),
                         live=LiveConfig(enabled=False), batcher=BatcherConfig(fault_file=str(fault)))
    server, port = await create_server(small_bundle, "127.0.0.1:0", configs)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield server, fault, channel
    finally:
        fault.unlink(missing_ok=True)
        await channel.close()
        await server.stop()


def count(server, code: str, method: str = "Recommend") -> float:
    return server.metrics.requests.labels(method, code)._value.get()


async def test_full_door_refuses_at_once_and_counts_everything(narrow_server):
    server, fault, channel = narrow_server
    stub = recommender_pb2_grpc.RecommenderStub(channel)
    fault.write_text("")  # the next inference hangs: two calls fill the door
    stuck = [asyncio.ensure_future(stub.Recommend(pb.RecommendRequest(query=f"stuck {i}", k=3), timeout=30))
             for i in range(2)]
    while server.in_flight.count < 2:
        await asyncio.sleep(0.01)
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Recommend(pb.RecommendRequest(query="one too many", k=3), timeout=5)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert time.monotonic() - started < 0.5
    # health checks are never refused at the door
    health = health_pb2_grpc.HealthStub(channel)
    assert (await health.Check(health_pb2.HealthCheckRequest(), timeout=2)).status == \
        health_pb2.HealthCheckResponse.SERVING
    # a caller that gives up is counted as CANCELLED, not lost
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Recommend(pb.RecommendRequest(query="impatient", k=3), timeout=0.2)
    fault.unlink()
    assert all(len(r.items) == 3 for r in await asyncio.gather(*stuck))
    assert count(server, "RESOURCE_EXHAUSTED") >= 1
    assert count(server, "OK") >= 2
    assert server.metrics.rejected.labels("door")._value.get() >= 1
    assert server.in_flight.count == 0


async def test_a_cancelled_call_is_counted(narrow_server):
    server, fault, channel = narrow_server
    stub = recommender_pb2_grpc.RecommenderStub(channel)
    fault.write_text("")
    call = stub.Recommend(pb.RecommendRequest(query="cancel me", k=3), timeout=30)
    while server.in_flight.count < 1:
        await asyncio.sleep(0.01)
    call.cancel()
    deadline = time.monotonic() + 5
    while count(server, "CANCELLED") < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert count(server, "CANCELLED") == 1
    fault.unlink()


def test_the_default_bound_comes_from_the_batcher():
    from server.batching.batcher import BatcherConfig
    from server.service.app import ServerConfig

    assert ServerConfig().concurrency_limit(BatcherConfig(max_batch_size=16)) == 64
    assert ServerConfig().concurrency_limit(BatcherConfig(max_batch_size=32)) == 128
    assert ServerConfig(max_concurrent_calls=7).concurrency_limit(BatcherConfig()) == 7
