"""The recserve gRPC server: Recommender + grpc.health.v1 + reflection + Prometheus endpoint.

The served state, its swap point and readiness live in one ServingSlot (server/serving_slot.py),
shared with the reloader, the live-write applier and the servicer.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import start_http_server

from export.runtime import RuntimeConfig
from export.settings import RecserveSettings, settings_config
from protos import SERVICE_NAME
from protos import recommender_pb2_grpc as pb_grpc
from server.batching.batcher import BatcherConfig
from server.engine import RankingConfig
from server.live.config import LiveConfig
from server.live.log_sharing import LogSharing
from server.workers.identity import joins_port_late
from server.live.service import LiveWrites, live_directory, lock_live_directory
from server.metrics import ServerMetrics
from server.reload import BundleReloader, ReloadOutcome
from server.requests import LimitsConfig
from server.retrieval.retriever import RetrievalConfig
from server.errors import BindFailed
from server.service.door import CallDoor
from server.service.reflection_v1 import enable_reflection
from server.service.info import public_name
from server.service.security import ServerSecurity
from server.service.servicer import RecommenderServicer
from server.serving_slot import ServingSlot
from server.serving_state import ServingConfigs, ServingState, open_serving_state

log = logging.getLogger(__name__)


def _recserve_version() -> str:
    try:
        return importlib.metadata.version("recserve")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


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
    """One token with every scope (`authorization: Bearer <token>`); prefer tokens_file."""
    tokens_file: str = ""
    """TOML file of scoped tokens (stored as sha256) and certificate subjects: docs/SECURITY.md."""
    tokens: str = ""
    """More scoped tokens, `scope[+scope]:TOKEN` separated by spaces (set via RECSERVE_SERVER_TOKENS)."""
    tls_cert: str = ""
    """PEM certificate chain of the gRPC port; with tls_key the port speaks only TLS (re-read on change)."""
    tls_key: str = ""
    """PEM private key of tls_cert."""
    tls_client_ca: str = ""
    """PEM CA certificates; when set, clients must present a certificate they signed (mutual TLS)."""
    insecure: bool = False
    """Accept write and admin calls without credentials on a non-loopback address (protected mode off)."""
    reflection: bool = True
    """Serve gRPC server reflection (open to every caller, like health; off hides the API listing)."""
    metrics_host: str = ""
    """Interface the Prometheus endpoint binds (empty: the gRPC host)."""
    release_dir: str = ""
    """Publish directory of `recserve release`: Reload loads only `current` or a version in it (empty: Reload off)."""
    allow_reload_when_read_only: bool = False
    """Let Reload run on a server whose live writes are off (read-only); SIGHUP always reloads."""
    workers_reload_timeout_s: float = 600.0
    """With --workers: longest a Reload RPC waits for the other workers to serve the new bundle
    before it answers (the caller's deadline, when sooner, decides)."""
    max_concurrent_calls: int = 0
    """Recommender calls in flight at once; more are refused with RESOURCE_EXHAUSTED at the door
    (0 = 4 x the batcher's max_batch_size: a batch running, one ready, two filling; measured in
    bench/overload.py, a deeper door only adds queueing delay)."""
    drain_accept_s: float = 0.5
    """After SIGTERM, calls already sent are still taken this long before the port stops accepting
    (gRPC core cancels calls it received but Python had not picked up yet when it stops)."""
    malformed_log_interval_s: float = 10.0
    """At most one log line per interval about unparseable requests."""
    admission_proxy: bool = False
    """Put HAProxy on the gRPC port, the server on a loopback port behind it: calls beyond the
    door's bound are refused by the proxy (RESOURCE_EXHAUSTED, ~1 ms) without costing the serving
    core anything (server/admission_proxy.py; measured in bench/overload.py). Plaintext; with --workers N the supervisor runs it."""

    def concurrency_limit(self, batcher: BatcherConfig) -> int:
        """The door's bound: configured, or derived from what the batcher can hold."""
        return self.max_concurrent_calls or 4 * batcher.max_batch_size


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
        self.health = health.aio.HealthServicer()
        self.slot = ServingSlot(self.health, ("", SERVICE_NAME), on_swap=lambda _state: self.update_index_metrics())
        self.door = CallDoor(self.config.concurrency_limit(self.configs.batcher), self.metrics,
                             self.config.malformed_log_interval_s)
        self.in_flight = self.door.in_flight
        self.bundle_path: str | None = None
        self.reloader = BundleReloader(self.configs.serving(), self.metrics, self.slot,
                                       self.configs.live.old_state_grace_s)
        self.port: int | None = None
        self._public_address: str | None = None
        self.metrics_port: int | None = None
        self.security = ServerSecurity(self.config)  # TLS, tokens, protected mode
        self._metrics_http = None
        self._built_for: ServingState | None = None
        options = [
            ("grpc.max_receive_message_length", self.config.max_message_bytes),
            ("grpc.max_send_message_length", self.config.max_message_bytes),
            # on only for --workers N: then the workers share the port on purpose
            ("grpc.so_reuseport", 1 if LogSharing.from_env().shared else 0),
        ]
        self.grpc = grpc.aio.server(options=options, interceptors=[self.door])
        pb_grpc.add_RecommenderServicer_to_server(RecommenderServicer(self, self.slot), self.grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        if self.config.reflection:
            enable_reflection(  # v1alpha and v1 (server/service/reflection_v1.py)
                self.grpc, (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name))

    async def start(self, bundle_path: str | Path, address: str | None = None,
                    public_address: str | None = None) -> int:
        """Bind, report NOT_SERVING, load + warm the bundle, then report SERVING. Returns the port.

        public_address: set when the admission proxy listens there and forwards to `address`."""
        self._public_address = public_address
        address = address or f"{self.config.host}:{self.config.port}"
        joins_late = joins_port_late()  # a replacement --workers worker: bind once it serves
        if not joins_late:
            await self._listen(address)
        lock = None
        try:
            self._start_metrics_http()
            if self.configs.live.enabled:  # one server per live directory: refuse before loading
                lock = lock_live_directory(live_directory(bundle_path, self.configs.live))
            log.info("loading bundle %s", bundle_path)
            state = await open_serving_state(
                bundle_path, self.configs.serving(), self.metrics, self.slot.backend_health_changed)
            if lock is not None:  # recover live writes before the first call sees the state
                try:
                    self.slot.live = await LiveWrites.open(live_directory(bundle_path, self.configs.live),
                                                           self.configs.live, state, self.slot.swap, lock)
                except BaseException:
                    await state.close()
                    raise
            self.bundle_path = str(bundle_path)
            await self.slot.install(state)
        except BaseException:
            if lock is not None and self.live is None:
                lock.close()
            await self.stop(grace=0)
            raise
        if joins_late:
            await self._listen(address)
        log.info("serving bundle %s on port %s", self.state.version, self.port)
        return self.port

    async def _listen(self, address: str) -> None:
        try:
            self.port = self.security.bind(self.grpc, address, self._public_address)
        except RuntimeError as exc:  # grpc says only "Failed to bind"
            raise BindFailed(f"cannot listen on {address}: the port is in use or the address is not local") from exc
        await self.slot.publish_health()  # the aio HealthServicer starts out SERVING: correct it first
        await self.grpc.start()

    def _start_metrics_http(self) -> None:
        if self.config.metrics_port < 0:
            return
        try:
            self._metrics_http, _ = start_http_server(
                self.config.metrics_port, addr=self.config.metrics_host or self.security.host,
                registry=self.metrics.registry)
        except OSError as exc:
            raise BindFailed(f"cannot serve metrics on port {self.config.metrics_port}: {exc.strerror}") from exc
        self.metrics_port = self._metrics_http.server_port

    @property
    def state(self) -> ServingState | None:
        """The served state (swapped only through the slot)."""
        return self.slot.state

    @property
    def live(self) -> LiveWrites | None:
        return self.slot.live

    @property
    def ready(self) -> bool:
        return self.slot.ready

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

    def update_index_metrics(self) -> None:
        if self.state is not None:
            index = self.state.bundle.index
            self.metrics.index_size.labels("live").set(index.size)
            self.metrics.index_size.labels("stored").set(index.stored_count)
            if self._built_for is not self.state:  # a new bundle: recserve_build_info follows it
                self._built_for = self.state
                encoder = self.state.bundle.manifest.get("encoder") or {}
                model = public_name(str((encoder.get("model") or {}).get("source", "")))
                self.metrics.set_build(_recserve_version(), self.state.version, model)

    async def drain_and_stop(self, grace: float | None = None) -> None:
        """SIGTERM: NOT_SERVING at once; calls already sent are still taken for drain_accept_s,
        then the port stops accepting and every received call may finish within the grace period."""
        await self.slot.drain()
        grace = self.config.grace_period_s if grace is None else grace
        started = time.monotonic()
        await asyncio.sleep(min(self.config.drain_accept_s, grace))
        left = lambda: max(0.0, grace - (time.monotonic() - started))  # noqa: E731
        await self.health.enter_graceful_shutdown()
        # stop(grace) closes the port and waits for the calls gRPC has started; the door's own
        # count also covers handlers that finish after gRPC stopped waiting (grpc/grpc#37239).
        stopping = asyncio.create_task(self.grpc.stop(left()))
        if not await self.in_flight.wait_idle(left()):
            log.warning("%d calls still running after the %.1fs grace period", self.in_flight.count, grace)
        await stopping
        await self.stop(left())

    async def stop(self, grace: float | None = 0) -> None:
        await self.grpc.stop(grace)
        if self.slot.live is not None:
            live, self.slot.live = self.slot.live, None
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
