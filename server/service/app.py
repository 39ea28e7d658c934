"""The recserve gRPC server: Recommender + grpc.health.v1 + reflection + Prometheus endpoint.

Health is NOT_SERVING until a bundle is loaded and warmed up by real inference, follows the
inference backend's health after that, and goes NOT_SERVING at once when draining.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from export.runtime import RuntimeConfig
from export.settings import RecserveSettings, settings_config
from protos import SERVICE_NAME
from protos import recommender_pb2_grpc as pb_grpc
from server.batching.batcher import BatcherConfig
from server.engine import RankingConfig
from server.live.config import LiveConfig
from server.live.log_sharing import LogSharing
from server.live.service import LiveWrites, live_directory
from server.metrics import ServerMetrics
from server.reload import BundleReloader, ReloadOutcome
from server.requests import LimitsConfig
from server.retrieval.retriever import RetrievalConfig
from server.service.servicer import RecommenderServicer
from server.serving_state import ServingConfigs, ServingState, open_serving_state

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class InFlightCalls:
    """Counts admitted calls so a drain can wait for them itself.

    grpc.aio's stop(grace) stops waiting as soon as any handler has aborted (grpc/grpc#37239),
    and a drain aborts every new call, so the grace period is enforced here instead.
    """

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False


class ServerConfig(RecserveSettings):
    model_config = settings_config("server")

    host: str = "0.0.0.0"
    """Interface the gRPC server binds."""
    port: int = 50051
    """gRPC port (0 = any free port)."""
    metrics_port: int = 9464
    """Prometheus /metrics HTTP port (0 = any free port, -1 = off)."""
    grace_period_s: float = 10.0
    """On SIGTERM, how long in-flight calls may take to finish."""
    max_message_bytes: int = 8 * 1024 * 1024
    """Largest request or response message."""
    auth_token: str = ""
    """If set, every call must carry `authorization: Bearer <token>` metadata."""


@dataclass
class AllConfigs:
    """Every component config of a server, defaults for production."""

    server: ServerConfig = field(default_factory=ServerConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    batcher: BatcherConfig = field(default_factory=BatcherConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    ranking: RankingConfig = field(default_factory=RankingConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    live: LiveConfig = field(default_factory=LiveConfig)

    def serving(self) -> ServingConfigs:
        return ServingConfigs(self.runtime, self.batcher, self.retrieval, self.ranking)


class RecserveServer:
    def __init__(self, configs: AllConfigs | None = None) -> None:
        self.configs = configs or AllConfigs()
        self.config = self.configs.server
        self.limits = self.configs.limits
        self.metrics = ServerMetrics()
        self.state: ServingState | None = None
        self.draining = False
        self.in_flight = InFlightCalls()
        self.live: LiveWrites | None = None
        self.bundle_path: str | None = None
        self.reloader = BundleReloader(
            self.configs.serving(), self.metrics, lambda: self.state, self._serve_state,
            lambda: self.live, self._on_state_health, self.configs.live.old_state_grace_s)
        self.port: int | None = None
        self.metrics_port: int | None = None
        self.health = health.aio.HealthServicer()
        self._metrics_http = None
        options = [
            ("grpc.max_receive_message_length", self.config.max_message_bytes),
            ("grpc.max_send_message_length", self.config.max_message_bytes),
            # on only for --workers N: then the workers share the port on purpose
            ("grpc.so_reuseport", 1 if LogSharing.from_env().shared else 0),
        ]
        self.grpc = grpc.aio.server(options=options)
        pb_grpc.add_RecommenderServicer_to_server(RecommenderServicer(self), self.grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME), self.grpc)

    async def start(self, bundle_path: str | Path, address: str | None = None) -> int:
        """Bind, report NOT_SERVING, load + warm the bundle, then report SERVING. Returns the port."""
        address = address or f"{self.config.host}:{self.config.port}"
        self.port = self.grpc.add_insecure_port(address)
        await self._set_health(False)
        await self.grpc.start()
        if self.config.metrics_port >= 0:
            self._metrics_http, _ = start_http_server(self.config.metrics_port, registry=self.metrics.registry)
            self.metrics_port = self._metrics_http.server_port
        try:
            state = await open_serving_state(
                bundle_path, self.configs.serving(), self.metrics, self._on_backend_health)
            if self.configs.live.enabled:  # recover live writes before the first call sees the state
                try:
                    self.live = await LiveWrites.open(live_directory(bundle_path, self.configs.live),
                                                      self.configs.live, state, self._serve_state)
                except BaseException:
                    await state.close()
                    raise
            self.state = state
        except BaseException:
            await self.stop(grace=0)
            raise
        self.bundle_path = str(bundle_path)
        self.update_index_metrics()
        await self._set_health(True)
        log.info("serving bundle %s on port %s", self.state.version, self.port)
        return self.port

    @property
    def last_applied_sequence(self) -> int:
        """Sequence number of the last live write applied to the served state (0: none)."""
        return self.live.last_applied if self.live is not None else 0

    async def reload(self, bundle_path: str | Path | None = None) -> ReloadOutcome:
        """Serve another bundle (default: the configured path again, e.g. a moved symlink)."""
        path = str(bundle_path or self.bundle_path)
        outcome = await self.reloader.reload(path)
        self.bundle_path = path
        return outcome

    def _serve_state(self, state: ServingState) -> None:
        """The swap point: from here on new calls get `state` (called by the live writer)."""
        self.state = state
        self.update_index_metrics()

    def _on_state_health(self, state: ServingState, healthy: bool) -> None:
        if state is self.state:  # a retired bundle's batcher no longer decides health
            self._on_backend_health(healthy)

    def update_index_metrics(self) -> None:
        if self.state is not None:
            index = self.state.bundle.index
            self.metrics.index_size.labels("live").set(index.size)
            self.metrics.index_size.labels("stored").set(index.index.get_current_count())

    def _on_backend_health(self, healthy: bool) -> None:
        if not self.draining:
            asyncio.get_running_loop().create_task(self._set_health(healthy))

    async def _set_health(self, serving: bool) -> None:
        status = SERVING if serving else NOT_SERVING
        for service in ("", SERVICE_NAME):
            await self.health.set(service, status)

    async def drain_and_stop(self, grace: float | None = None) -> None:
        """SIGTERM: NOT_SERVING at once, refuse new calls, let in-flight calls finish, stop."""
        self.draining = True
        await self.health.enter_graceful_shutdown()
        grace = self.config.grace_period_s if grace is None else grace
        started = time.monotonic()
        if not await self.in_flight.wait_idle(grace):
            log.warning("%d calls still running after the %.1fs grace period", self.in_flight.count, grace)
        await self.stop(max(0.0, grace - (time.monotonic() - started)))

    async def stop(self, grace: float | None = 0) -> None:
        await self.grpc.stop(grace)
        if self.live is not None:
            live, self.live = self.live, None
            await live.close(snapshot=True)
        await self.reloader.wait_retired()
        if self.state is not None:
            await self.state.close()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http = None

    async def wait_for_termination(self) -> None:
        await self.grpc.wait_for_termination()


async def create_server(
    bundle_path: str | Path, address: str = "127.0.0.1:0", configs: AllConfigs | None = None
) -> tuple[RecserveServer, int]:
    """Start a server on `address` (port 0 = any free port) serving bundle_path: (server, port)."""
    server = RecserveServer(configs)
    port = await server.start(bundle_path, address)
    return server, port
