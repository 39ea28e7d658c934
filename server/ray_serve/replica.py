"""One Ray Serve replica: the same engine `recserve serve` runs, answering through Ray's gRPC proxy.

Each replica starts a complete RecserveServer (bundle, token-budget batcher, retrieval,
ranking, auth, validation, the one status table, live writes) on a private loopback port
that nothing calls, and hands every RPC Ray routes to it to that server's RecommenderServicer in process.
Ray's proxy passes a RayServegRPCContext; `_CallContext` gives it the two things the servicer
reads that Ray's context lacks. A status the servicer sets is raised back to the proxy, which
answers with that code and message (Ray's gRPCStatusError path).

Live writes follow the `--workers` contract (server/live/log_sharing.py): every replica of a
fixed-size deployment on one host is an applier of the same write-ahead log (its Ray replica
rank is its worker index; rank 0 snapshots), any replica may take a write under the writer
lock, and `min_sequence` gives read-your-writes on whichever replica answers.
"""

from __future__ import annotations

import os

import grpc
from grpc_health.v1 import health_pb2

from protos import recommender_pb2 as pb
from server.live.log_sharing import ENV_COUNT, ENV_INDEX
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


class CallFailed(Exception):
    """The servicer set a non-OK status: raised so Ray's proxy answers with it."""


class RecommenderReplica:
    """Deployment body (server/ray_serve/app.py wraps it in serve.deployment)."""

    async def __init__(self, bundle_path: str, configs: AllConfigs, replicas: int = 1) -> None:
        if configs.live.enabled:  # one log, many appliers: this replica is applier `rank`
            from ray import serve

            rank = serve.get_replica_context().rank.rank
            os.environ[ENV_INDEX], os.environ[ENV_COUNT] = str(rank), str(replicas)
        self.server = RecserveServer(configs)
        await self.server.start(bundle_path, "127.0.0.1:0")
        self.servicer = RecommenderServicer(self.server)

    async def _call(self, method: str, request, grpc_context, empty):
        context = _CallContext(grpc_context)
        response = await getattr(self.servicer, method)(request, context)
        code = grpc_context.code()
        if code not in (None, grpc.StatusCode.OK):
            raise CallFailed(grpc_context.details())
        return response if response is not None else empty

    async def Recommend(self, request: pb.RecommendRequest, grpc_context) -> pb.RecommendResponse:
        return await self._call("Recommend", request, grpc_context, pb.RecommendResponse())

    async def RecommendBatch(self, request: pb.RecommendBatchRequest, grpc_context) -> pb.RecommendBatchResponse:
        return await self._call("RecommendBatch", request, grpc_context, pb.RecommendBatchResponse())

    async def Embed(self, request: pb.EmbedRequest, grpc_context) -> pb.EmbedResponse:
        return await self._call("Embed", request, grpc_context, pb.EmbedResponse())

    async def GetInfo(self, request: pb.GetInfoRequest, grpc_context) -> pb.GetInfoResponse:
        return await self._call("GetInfo", request, grpc_context, pb.GetInfoResponse())

    async def UpsertItems(self, request: pb.UpsertItemsRequest, grpc_context) -> pb.WriteResponse:
        return await self._call("UpsertItems", request, grpc_context, pb.WriteResponse())

    async def DeleteItems(self, request: pb.DeleteItemsRequest, grpc_context) -> pb.WriteResponse:
        return await self._call("DeleteItems", request, grpc_context, pb.WriteResponse())

    async def RecordInteractions(self, request: pb.RecordInteractionsRequest, grpc_context) -> pb.WriteResponse:
        return await self._call("RecordInteractions", request, grpc_context, pb.WriteResponse())

    async def Reload(self, request: pb.ReloadRequest, grpc_context) -> pb.ReloadResponse:
        # A new bundle is a new deployment version: `recserve serve-ray --bundle NEW` rolls
        # the replicas over; Reload here would reload only this replica (refused unless the
        # server config allows it).
        return await self._call("Reload", request, grpc_context, pb.ReloadResponse())

    async def Check(self, request: health_pb2.HealthCheckRequest) -> health_pb2.HealthCheckResponse:
        """grpc.health.v1 through the proxy: this replica's readiness (real inference health)."""
        status = health_pb2.HealthCheckResponse.SERVING if self.server.ready \
            else health_pb2.HealthCheckResponse.NOT_SERVING
        return health_pb2.HealthCheckResponse(status=status)

    async def check_health(self) -> None:
        """Ray Serve's replica health probe: a replica whose backend failed is restarted."""
        if not self.server.ready:
            raise RuntimeError("recserve replica is not ready (backend unhealthy or draining)")

    async def __del__(self) -> None:
        server = getattr(self, "server", None)  # absent when __init__ failed
        if server is not None:
            await server.stop(grace=0)
