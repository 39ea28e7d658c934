"""The slot a server serves from: the current ServingState, its one swap point, and readiness.

The reloader, the live-write applier and the servicer share this object instead of the whole
server. grpc.health.v1 is computed here only (`publish_health`): SERVING once a state is
installed (loaded, warmed, live writes recovered), the server is not draining, and the
installed state's inference backend is healthy.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Callable

from grpc_health.v1 import health, health_pb2

if TYPE_CHECKING:
    from server.live.service import LiveWrites
    from server.serving_state import ServingState

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ServingSlot:
    def __init__(self, health_servicer: health.aio.HealthServicer, services: tuple[str, ...],
                 on_swap: Callable[["ServingState"], None] = lambda state: None) -> None:
        self.state: ServingState | None = None
        self.live: LiveWrites | None = None  # the log applier of this slot; None: read-only
        self.installed = False
        self.draining = False
        self._health = health_servicer
        self._services = services
        self._on_swap = on_swap  # e.g. index metrics follow the served state
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()

    def swap(self, state: "ServingState") -> None:
        """From here on new calls get `state` (calls already running keep the one they hold)."""
        self.state = state
        self._on_swap(state)

    async def install(self, state: "ServingState") -> None:
        """The first state, loaded and recovered: the server may now report SERVING."""
        self.swap(state)
        self.installed = True
        await self.publish_health()

    async def drain(self) -> None:
        self.draining = True
        await self.publish_health()

    @property
    def ready(self) -> bool:
        state = self.state
        return self.installed and not self.draining and state is not None and state.batcher.healthy

    async def publish_health(self) -> None:
        """Set health from `ready`, read while the lock is held (no stale flips)."""
        async with self._lock:
            status = SERVING if self.ready else NOT_SERVING
            for service in self._services:
                await self._health.set(service, status)

    def backend_health_changed(self, _healthy: bool) -> None:
        """A batcher's health changed (any state's: `ready` reads only the served one)."""
        task = asyncio.get_running_loop().create_task(self.publish_health())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
