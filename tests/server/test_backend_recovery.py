"""A backend killed by a hung inference is probed again and serves within 5 s of the cause ending."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos import recommender_pb2 as pb
from protos import recommender_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture
async def faulty_server(small_bundle, tmp_path):
    from server.batching.batcher import BatcherConfig
    from server.live.config import LiveConfig
    from server.service.app import AllConfigs, ServerConfig, create_server

    fault = tmp_path / "fault"
    configs = AllConfigs(server=ServerConfig(metrics_port=-1), live=LiveConfig(enabled=False),
                         batcher=BatcherConfig(fault_file=str(fault), inference_timeout_s=0.5,
                                               probe_backoff_s=0.05, probe_backoff_max_s=0.5))
    server, port = await create_server(small_bundle, "127.0.0.1:0", configs)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield server, fault, recommender_pb2_grpc.RecommenderStub(channel), health_pb2_grpc.HealthStub(channel)
    finally:
        fault.unlink(missing_ok=True)
        await channel.close()
        await server.stop()


async def status(health) -> int:
    return (await health.Check(health_pb2.HealthCheckRequest(service="recserve.v1.Recommender"), timeout=2)).status


async def wait_serving(health, limit_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        if await status(health) == SERVING:
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    raise AssertionError(f"not SERVING within {limit_s}s")


@pytest.mark.parametrize("mode", ["hang", "fail"])
async def test_dead_backend_serves_again_once_the_cause_ends(faulty_server, mode):
    server, fault, stub, health = faulty_server
    assert (await stub.Embed(pb.EmbedRequest(texts=["before"]), timeout=5)).embeddings
    fault.write_text("fail" if mode == "fail" else "")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Embed(pb.EmbedRequest(texts=["during the fault"]), timeout=5)
    assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL)
    await asyncio.sleep(1.0)  # several failed probes: it stays down while the cause lasts
    assert await status(health) != SERVING
    assert server.state.batcher.dead_reason is not None
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Embed(pb.EmbedRequest(texts=["still during the fault"]), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    fault.unlink()  # the cause ends
    assert await wait_serving(health, 5.0) < 5.0
    assert (await stub.Embed(pb.EmbedRequest(texts=["after"]), timeout=5)).embeddings
    assert (await stub.Recommend(pb.RecommendRequest(query="after", k=3), timeout=5)).items
