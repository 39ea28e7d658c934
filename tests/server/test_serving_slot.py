"""ServingSlot: readiness from the installed state only, one swap point, drain."""

import asyncio
from types import SimpleNamespace

from grpc_health.v1 import health, health_pb2

from server.serving_slot import NOT_SERVING, SERVING, ServingSlot


def _state(healthy: bool = True):
    return SimpleNamespace(batcher=SimpleNamespace(healthy=healthy))


async def _status(servicer: health.aio.HealthServicer, service: str = "") -> int:
    response = await servicer.Check(health_pb2.HealthCheckRequest(service=service), None)
    return response.status


def test_serving_only_after_install_and_not_while_draining():
    async def main():
        servicer = health.aio.HealthServicer()
        swapped = []
        slot = ServingSlot(servicer, ("", "svc"), on_swap=swapped.append)
        await slot.publish_health()
        assert await _status(servicer) == NOT_SERVING  # the aio servicer starts out SERVING
        first = _state()
        slot.swap(first)  # e.g. live-write recovery swaps before install
        await slot.publish_health()
        assert await _status(servicer) == NOT_SERVING and not slot.ready
        await slot.install(first)
        assert await _status(servicer) == SERVING and await _status(servicer, "svc") == SERVING
        assert swapped == [first, first]
        await slot.drain()
        assert await _status(servicer) == NOT_SERVING and await _status(servicer, "svc") == NOT_SERVING

    asyncio.run(main())


def test_only_the_served_states_backend_decides_health():
    async def main():
        servicer = health.aio.HealthServicer()
        slot = ServingSlot(servicer, ("",))
        old, new = _state(), _state()
        await slot.install(old)
        slot.swap(new)  # a reload: old is retiring
        old.batcher.healthy = False
        slot.backend_health_changed(False)
        await asyncio.sleep(0.01)
        assert await _status(servicer) == SERVING
        new.batcher.healthy = False
        slot.backend_health_changed(False)
        await asyncio.sleep(0.01)
        assert await _status(servicer) == NOT_SERVING
        new.batcher.healthy = True
        slot.backend_health_changed(True)
        await asyncio.sleep(0.01)
        assert await _status(servicer) == SERVING

    asyncio.run(main())
