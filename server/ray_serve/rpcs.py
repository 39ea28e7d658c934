"""The recserve.v1.Recommender methods a Ray Serve deployment answers for the gRPC proxy.

Ray's proxy calls the deployment's method of the RPC's name with (request, context); both
the ingress and an engine replica called directly define them all the same way, through
`_forward(method, request, context)`, so they are generated here from one table.
"""

from __future__ import annotations

from grpc_health.v1 import health_pb2

from protos import recommender_pb2 as pb

RESPONSES = {
    "Recommend": pb.RecommendResponse, "RecommendBatch": pb.RecommendBatchResponse,
    "Embed": pb.EmbedResponse, "GetInfo": pb.GetInfoResponse, "UpsertItems": pb.WriteResponse,
    "DeleteItems": pb.WriteResponse, "RecordInteractions": pb.WriteResponse,
    # A new bundle is a new deployment version (`recserve serve-ray --bundle NEW` rolls the
    # replicas over); Reload through the proxy reloads one replica (refused unless allowed).
    "Reload": pb.ReloadResponse,
}


class CallFailed(Exception):
    """A non-OK status set on the proxy's context: raised so the proxy answers with it."""


def _method(name: str, empty: type):
    async def rpc(self, request, grpc_context):
        response = await self._forward(name, request, grpc_context)
        return response if response is not None else empty()

    rpc.__name__ = rpc.__qualname__ = name
    return rpc


def answers_recommender_rpcs(cls: type) -> type:
    """Adds one method per RPC and grpc.health.v1 `Check` (from the class's `_ready()`)."""
    for name, empty in RESPONSES.items():
        setattr(cls, name, _method(name, empty))

    async def Check(self, request: health_pb2.HealthCheckRequest) -> health_pb2.HealthCheckResponse:
        ready = await self._ready()
        return health_pb2.HealthCheckResponse(
            status=health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING)

    cls.Check = Check
    return cls
