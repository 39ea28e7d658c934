"""The deployment Ray's gRPC proxy calls: it forwards each RPC to an engine replica through a
DeploymentHandle and owns what a caller sees when that replica dies.

Ray's proxy answers INTERNAL for a call whose replica died under it (the RayActorError is
not a status it maps), so a client cannot tell "retry me" from a bug. Here a read that lost
its replica is sent again to another one (reads have no side effects), and a write is
answered UNAVAILABLE: it may have been logged before the replica died, and the client's
retry carries the same request_id, which the log applies at most once (server/live/).
Ray's own refusal when every replica and the queue are full stays RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2

from protos import recommender_pb2 as pb

READS = frozenset({"Recommend", "RecommendBatch", "Embed", "GetInfo"})
READ_ATTEMPTS = 3  # a second replica is enough unless several die at once
REPLICA_LOST = "the replica serving this call stopped; retry (a write's request_id keeps it applied once)"


class CallFailed(Exception):
    """A non-OK status set on the proxy's context: raised so the proxy answers with it."""


def replica_lost_errors() -> tuple[type[BaseException], ...]:
    from ray.exceptions import ActorUnavailableError, RayActorError
    from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError

    return RayActorError, ActorUnavailableError, ReplicaUnavailableError, DeploymentUnavailableError


class RecommenderIngress:
    """Deployment body (server/ray_serve/app.py); `engine` is the handle of the engine replicas."""

    def __init__(self, engine) -> None:
        from ray.serve.exceptions import BackPressureError

        self.engine = engine
        self.lost = replica_lost_errors()
        self.back_pressure = BackPressureError

    async def _forward(self, method: str, request, grpc_context, empty):
        attempts = READ_ATTEMPTS if method in READS else 1
        for attempt in range(attempts):
            try:
                response, code, details = await self.engine.call.remote(method, request, grpc_context)
                break
            except self.back_pressure:
                response, code, details = None, grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], \
                    "server is at capacity; retry with backoff"
                break
            except self.lost:
                response, code, details = None, grpc.StatusCode.UNAVAILABLE.value[0], REPLICA_LOST
        if code != grpc.StatusCode.OK.value[0]:
            grpc_context.set_code(_status(code))
            grpc_context.set_details(details)
            raise CallFailed(details)
        return response if response is not None else empty

    async def Recommend(self, request: pb.RecommendRequest, grpc_context) -> pb.RecommendResponse:
        return await self._forward("Recommend", request, grpc_context, pb.RecommendResponse())

    async def RecommendBatch(self, request: pb.RecommendBatchRequest, grpc_context) -> pb.RecommendBatchResponse:
        return await self._forward("RecommendBatch", request, grpc_context, pb.RecommendBatchResponse())

    async def Embed(self, request: pb.EmbedRequest, grpc_context) -> pb.EmbedResponse:
        return await self._forward("Embed", request, grpc_context, pb.EmbedResponse())

    async def GetInfo(self, request: pb.GetInfoRequest, grpc_context) -> pb.GetInfoResponse:
        return await self._forward("GetInfo", request, grpc_context, pb.GetInfoResponse())

    async def UpsertItems(self, request: pb.UpsertItemsRequest, grpc_context) -> pb.WriteResponse:
        return await self._forward("UpsertItems", request, grpc_context, pb.WriteResponse())

    async def DeleteItems(self, request: pb.DeleteItemsRequest, grpc_context) -> pb.WriteResponse:
        return await self._forward("DeleteItems", request, grpc_context, pb.WriteResponse())

    async def RecordInteractions(self, request: pb.RecordInteractionsRequest, grpc_context) -> pb.WriteResponse:
        return await self._forward("RecordInteractions", request, grpc_context, pb.WriteResponse())

    async def Reload(self, request: pb.ReloadRequest, grpc_context) -> pb.ReloadResponse:
        # A new bundle is a new deployment version (`recserve serve-ray --bundle NEW` rolls
        # the replicas over); Reload here would reload one replica (refused unless allowed).
        return await self._forward("Reload", request, grpc_context, pb.ReloadResponse())

    async def Check(self, request: health_pb2.HealthCheckRequest) -> health_pb2.HealthCheckResponse:
        """grpc.health.v1 through the proxy: SERVING when an engine replica is ready."""
        for _ in range(READ_ATTEMPTS):
            try:
                ready = await self.engine.ready.remote()
                break
            except self.lost:
                ready = False
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        return health_pb2.HealthCheckResponse(status=status)


def _status(code: int) -> grpc.StatusCode:
    return next(s for s in grpc.StatusCode if s.value[0] == code)
