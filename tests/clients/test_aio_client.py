"""The asyncio client over real gRPC against the fake server."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from clients import errors
from clients.aio_client import AsyncRecommenderClient
from clients.options import ClientOptions, RetryPolicy
from clients.results import Interaction
from tests.clients.conftest import FAKE_VERSION

FAST_RETRY = RetryPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05)


def options_for(server, **changes) -> ClientOptions:
    changes.setdefault("retry", FAST_RETRY)
    return ClientOptions(target=server.target, **changes)


async def test_concurrent_recommends_over_one_channel(fake_server):
    fake_server.behaviour.latency_s = 0.05
    async with AsyncRecommenderClient(options=options_for(fake_server, auth_token="t")) as client:
        started = time.monotonic()
        results = await asyncio.gather(*(client.recommend(f"query {i}", k=2) for i in range(20)))
        elapsed = time.monotonic() - started
    assert all(r.bundle_version == FAKE_VERSION and len(r.items) == 2 for r in results)
    assert elapsed < 0.05 * 20 / 2, "calls were not concurrent"
    assert len({peer for _, _, peer in fake_server.behaviour.calls}) == 1
    assert all(md["authorization"] == "Bearer t" for _, md, _ in fake_server.behaviour.calls)


async def test_unavailable_is_retried(fake_server):
    fake_server.behaviour.fail_first = 2
    async with AsyncRecommenderClient(options=options_for(fake_server)) as client:
        result = await client.recommend(history=["85123A"])
    assert len(result.items) == 10 and len(fake_server.behaviour.calls) == 3


async def test_overload_is_raised_at_once(fake_server):
    fake_server.behaviour.fail_first = 1
    fake_server.behaviour.fail_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    async with AsyncRecommenderClient(options=options_for(fake_server)) as client:
        with pytest.raises(errors.Overloaded):
            await client.recommend("lantern")
    assert len(fake_server.behaviour.calls) == 1


async def test_deadline(fake_server):
    fake_server.behaviour.latency_s = 2.0
    async with AsyncRecommenderClient(options=options_for(fake_server, deadline_s=0.2)) as client:
        started = time.monotonic()
        with pytest.raises(errors.DeadlineExceeded):
            await client.recommend("lantern")
    assert time.monotonic() - started < 1.0


async def test_writes_info_and_health(fake_server):
    fake_server.behaviour.fail_first = 1
    async with AsyncRecommenderClient(options=options_for(fake_server)) as client:
        # retried after UNAVAILABLE with the same idempotency key: the server counts it once
        written = await client.record_interactions([Interaction("17850", "71053", "view")])
        info = await client.info()
        assert await client.health() == "SERVING"
    first, retry = fake_server.behaviour.requests[:2]
    assert first.request_id and retry.request_id == first.request_id
    assert written.applied == 1
    assert info.bundle_version == FAKE_VERSION
