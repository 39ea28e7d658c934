"""The real server on port 0 over real gRPC: every RPC, filters, explain, errors, health, metrics."""

from __future__ import annotations

import asyncio
import threading
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from protos import recommender_pb2 as pb
from server.served_bundle import ServedBundle


@pytest.fixture(scope="module")
def catalog_facts(small_bundle):
    """Real ids, a known user and an attribute value, read from the built bundle."""
    bundle = ServedBundle.load(small_bundle)
    users = sorted(bundle.users._bundle, key=lambda u: -len(bundle.users._bundle[u]))
    attrs = next((a for a in bundle.catalog.attributes if a), {})
    return {
        "item_ids": bundle.catalog.item_ids,
        "titles": bundle.catalog.titles,
        "user": users[0],
        "user_history": [bundle.catalog.item_ids[i] for i in bundle.users._bundle[users[0]]],
        "attribute": next(iter(attrs.items()), None),
        "attributes": bundle.catalog.attributes,
    }


async def test_recommend_by_text_returns_k_items_with_timings(running_server, catalog_facts):
    server, stub, _ = running_server
    from export.item_text import item_text

    text = item_text(catalog_facts["titles"][3], "", catalog_facts["attributes"][3])
    response = await stub.Recommend(pb.RecommendRequest(query=text, k=10))
    assert len(response.items) == 10
    assert response.bundle_version == server.state.version
    assert response.items[0].item_id in catalog_facts["item_ids"]
    scores = [i.score for i in response.items]
    assert scores == sorted(scores, reverse=True)
    assert response.timings.encode_us > 0 and response.timings.total_us >= response.timings.rank_us
    # the server embeds a query exactly as the build embedded the item (same text, same vector)
    embedded = await stub.Embed(pb.EmbedRequest(texts=[text]))
    stored = server.state.bundle.index.vectors[3]
    assert float(np.dot(embedded.embeddings[0].values, stored)) > 0.9999


async def test_recommend_by_history_and_by_user_with_explanations(running_server, catalog_facts):
    _, stub, _ = running_server
    by_history = await stub.Recommend(pb.RecommendRequest(
        history=catalog_facts["item_ids"][:3], k=5, explain=True))
    assert len(by_history.items) == 5
    assert all(item.reason for item in by_history.items)
    assert all(item.contributions for item in by_history.items)
    by_user = await stub.Recommend(pb.RecommendRequest(
        user_id=catalog_facts["user"], k=5, explain=True,
        filter=pb.Filter(exclude_interacted=True)))
    assert len(by_user.items) == 5
    assert not {i.item_id for i in by_user.items} & set(catalog_facts["user_history"])


async def test_unknown_user_with_no_query_gets_popular_items(running_server):
    _, stub, _ = running_server
    response = await stub.Recommend(pb.RecommendRequest(user_id="no-such-user", k=4))
    assert len(response.items) == 4
    # unknown history ids are skipped, not fatal
    response = await stub.Recommend(pb.RecommendRequest(history=["no-such-item"], k=4))
    assert len(response.items) == 4


async def test_filters_are_honoured(running_server, catalog_facts):
    _, stub, _ = running_server
    excluded = catalog_facts["item_ids"][:20]
    response = await stub.Recommend(pb.RecommendRequest(
        query=catalog_facts["titles"][0], k=10, filter=pb.Filter(exclude_item_ids=excluded)))
    assert len(response.items) == 10 and not {i.item_id for i in response.items} & set(excluded)
    if catalog_facts["attribute"] is not None:
        name, value = catalog_facts["attribute"]
        response = await stub.Recommend(pb.RecommendRequest(
            query=catalog_facts["titles"][0], k=5, filter=pb.Filter(attribute_equals={name: value})))
        label_of = {item_id: i for i, item_id in enumerate(catalog_facts["item_ids"])}
        assert response.items
        for item in response.items:
            assert catalog_facts["attributes"][label_of[item.item_id]].get(name) == value


async def test_batch_embed_and_info(running_server, catalog_facts):
    server, stub, _ = running_server
    batch = await stub.RecommendBatch(pb.RecommendBatchRequest(requests=[
        pb.RecommendRequest(query=catalog_facts["titles"][1], k=3),
        pb.RecommendRequest(history=catalog_facts["item_ids"][5:7], k=4),
    ]))
    assert [len(r.items) for r in batch.responses] == [3, 4]
    embedded = await stub.Embed(pb.EmbedRequest(texts=["red lantern", "heart holder"]))
    vectors = np.array([e.values for e in embedded.embeddings])
    assert vectors.shape == (2, embedded.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    info = await stub.GetInfo(pb.GetInfoRequest())
    assert info.bundle_version == server.state.version
    assert info.index_size == len(catalog_facts["item_ids"])
    assert info.execution_provider == "CPUExecutionProvider"


@pytest.mark.parametrize("request_, fragment", [
    (pb.RecommendRequest(k=5), "at least one"),
    (pb.RecommendRequest(query="x", k=1001), "k must be"),
    (pb.RecommendRequest(query="x", k=-1), "k must be"),
    (pb.RecommendRequest(query="x", diversity=1.5), "diversity"),
    (pb.RecommendRequest(query="x" * 5000), "longer than"),
])
async def test_bad_requests_are_invalid_argument(running_server, request_, fragment):
    _, stub, _ = running_server
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Recommend(request_)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in err.value.details()


async def test_bad_batch_and_embed_requests(running_server):
    _, stub, _ = running_server
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Embed(pb.EmbedRequest(texts=[]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.RecommendBatch(pb.RecommendBatchRequest(
            requests=[pb.RecommendRequest(query="x")] * 300))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # the server is still up
    assert (await stub.Recommend(pb.RecommendRequest(query="candle", k=1))).items


async def test_expired_deadline_is_deadline_exceeded(running_server):
    _, stub, _ = running_server
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Recommend(pb.RecommendRequest(query="a fresh query nobody asked", k=3), timeout=0.0005)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_overload_is_refused_at_once_with_resource_exhausted(small_bundle):
    from protos import recommender_pb2_grpc
    from server.batching.batcher import BatcherConfig
    from server.service.app import AllConfigs, ServerConfig, create_server

    configs = AllConfigs(server=ServerConfig(metrics_port=-1),
                         batcher=BatcherConfig(max_queue=2, max_batch_size=1, max_wait_us=0, cache_size=0))
    server, port = await create_server(small_bundle, "127.0.0.1:0", configs)
    runtime = server.state.bundle.backend.runtime
    real_run, gate = runtime.run, threading.Event()
    runtime.run = lambda feeds: (gate.wait(10), real_run(feeds))[1]  # inference stalls until released
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = recommender_pb2_grpc.RecommenderStub(channel)
            calls = [asyncio.ensure_future(stub.Recommend(pb.RecommendRequest(query=f"query {i}", k=3)))
                     for i in range(12)]
            done, _ = await asyncio.wait(calls, timeout=5, return_when=asyncio.FIRST_COMPLETED)
            # refused at once, while inference is still stalled
            assert done and all(c.exception().code() == grpc.StatusCode.RESOURCE_EXHAUSTED for c in done)
            gate.set()
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
        codes = [o.code() for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
        assert set(codes) == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert sum(isinstance(o, pb.RecommendResponse) for o in outcomes) >= 2
    finally:
        await server.stop()


async def test_failed_batch_fails_only_its_request_and_health_recovers(running_server):
    server, stub, channel = running_server
    runtime = server.state.bundle.backend.runtime
    real_run = runtime.run
    calls = {"n": 0}

    def fail_once(feeds):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("injected encoder failure")
        return real_run(feeds)

    runtime.run = fail_once
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Recommend(pb.RecommendRequest(query="this batch will fail", k=3))
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "injected" not in err.value.details()  # no internal detail leaks
    health = health_pb2_grpc.HealthStub(channel)
    for _ in range(50):
        status = (await health.Check(health_pb2.HealthCheckRequest(service="recserve.v1.Recommender"))).status
        if status == health_pb2.HealthCheckResponse.SERVING:
            break
        await asyncio.sleep(0.05)
    assert status == health_pb2.HealthCheckResponse.SERVING
    assert (await stub.Recommend(pb.RecommendRequest(query="works again", k=3))).items


async def test_health_metrics_and_reflection(running_server):
    server, stub, channel = running_server
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "recserve.v1.Recommender"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    await stub.Recommend(pb.RecommendRequest(query="lantern", k=2))
    body = await asyncio.to_thread(
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics").read().decode())
    assert 'recserve_requests_total{code="OK",method="Recommend"}' in body
    for metric in ("recserve_stage_seconds_bucket", "recserve_batch_size_bucket",
                   "recserve_batch_padding_waste_ratio_bucket", "recserve_queue_depth",
                   "recserve_embedding_cache_lookups_total", "recserve_index_items"):
        assert metric in body
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    async for response in responses:
        names = {s.name for s in response.list_services_response.service}
        assert {"recserve.v1.Recommender", "grpc.health.v1.Health"} <= names
        break


async def test_health_is_not_serving_until_warm_and_when_draining(small_bundle):
    from server.service.app import AllConfigs, RecserveServer, ServerConfig

    server = RecserveServer(AllConfigs(server=ServerConfig(metrics_port=-1)))
    seen = []
    real_set = server.health.set

    async def record(service: str, status) -> None:
        seen.append((status == health_pb2.HealthCheckResponse.SERVING, server.state is not None))
        await real_set(service, status)

    server.health.set = record
    await server.start(small_bundle, "127.0.0.1:0")
    assert seen[0][0] is False and seen[-1][0] is True
    assert all(installed for serving, installed in seen if serving), "SERVING before the state was installed"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        drain = asyncio.create_task(server.drain_and_stop(grace=1.0))
        await asyncio.sleep(0.05)
        try:
            reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        except grpc.aio.AioRpcError as err:  # already closed: also not serving
            assert err.code() == grpc.StatusCode.UNAVAILABLE
        await drain
