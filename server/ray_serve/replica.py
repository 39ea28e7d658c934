"""One Ray Serve replica: the same engine `recserve serve` runs, answering through Ray's gRPC proxy.

Each replica starts a complete RecserveServer (bundle, token-budget batcher, retrieval,
ranking, auth, validation, the one status table, live writes) on a private loopback port
that nothing calls, and hands every RPC the ingress (server/ray_serve/ingress.py) forwards to
that server's RecommenderServicer in process. The proxy's RayServegRPCContext travels with
the call (Ray serializes it); `_CallContext` gives it what the servicer reads that Ray's
context lacks, and the status the servicer set goes back to the ingress as data.

Live writes follow the `--workers` contract (server/live/log_sharing.py): every replica of a
fixed-size deployment on one host is an applier of the same write-ahead log (its Ray replica
rank is its worker index; rank 0 snapshots), any replica may take a write under the writer
lock, and `min_sequence` gives read-your-writes on whichever replica answers.
"""

from __future__ import annotations

import os

import grpc

from server.live.log_sharing import ENV_COUNT, ENV_INDEX
from server.ray_serve.rpcs import CallFailed, answers_recommender_rpcs
from server.service.app import AllConfigs, RecserveServer
from server.service.servicer import RecommenderServicer


class _CallContext:
    """Ray's gRPC context, plus what grpc.aio's ServicerContext has and it lacks."""

    def __init__(self, ray_context) -> None:
        self._ray = ray_context

    def time_remaining(self) -> float | None:
        return None  # Ray's proxy enforces its own request_timeout_s; no client deadline arrives

    def __getattr__(self, name: str):
        return getattr(self._ray, name)


@answers_recommender_rpcs
class RecommenderReplica:
    """Engine deployment body (server/ray_serve/app.py): the ingress calls `call` and `ready`;
    with no ingress the proxy calls the RPC methods themselves."""

    async def __init__(self, bundle_path: str, configs: AllConfigs, replicas: int = 1) -> None:
        if configs.live.enabled:  # one log, many appliers: this replica is applier `rank`
            from ray import serve

            rank = serve.get_replica_context().rank.rank
            os.environ[ENV_INDEX], os.environ[ENV_COUNT] = str(rank), str(replicas)
        self.server = RecserveServer(configs)
        await self.server.start(bundle_path, "127.0.0.1:0")
        self.servicer = RecommenderServicer(self.server, self.server.slot)

    async def call(self, method: str, request, grpc_context) -> tuple[object, int, str]:
        """One RPC: (response or None, the status code's number, its details). The status
        travels back as data: the ingress sets it on the proxy's context."""
        context = _CallContext(grpc_context)
        response = await getattr(self.servicer, method)(request, context)
        code = grpc_context.code()
        if code in (None, grpc.StatusCode.OK):
            return response, grpc.StatusCode.OK.value[0], ""
        return None, code.value[0], grpc_context.details()

    async def ready(self) -> bool:
        """This replica's readiness (real inference health), for grpc.health.v1 Check."""
        return self.server.ready

    _ready = ready

    async def _forward(self, method: str, request, grpc_context):
        """Called by the proxy itself: the servicer set any status on the proxy's context."""
        response, code, details = await self.call(method, request, grpc_context)
        if code != grpc.StatusCode.OK.value[0]:
            raise CallFailed(details)
        return response

    async def check_health(self) -> None:
        """Ray Serve's replica health probe: a replica whose backend failed is restarted."""
        if not self.server.ready:
            raise RuntimeError("recserve replica is not ready (backend unhealthy or draining)")

    async def __del__(self) -> None:
        server = getattr(self, "server", None)  # absent when __init__ failed
        if server is not None:
            await server.stop(grace=0)
