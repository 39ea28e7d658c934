"""The deployment Ray's gRPC proxy calls (by default): it forwards each RPC to an engine
replica through a DeploymentHandle and owns what a caller sees when that replica dies.

Ray's proxy answers INTERNAL for a call whose replica died under it (the RayActorError is
not a status it maps), so a client cannot tell "retry me" from a bug. Here a read that lost
its replica is sent again to another one (reads have no side effects), and a write is
answered UNAVAILABLE: it may have been logged before the replica died, and the client's
retry carries the same request_id, which the log applies at most once (server/live/).
Ray's own refusal when every replica and the queue are full stays RESOURCE_EXHAUSTED.
The hop costs throughput (docs/SCALING.md); `ingress_replicas = 0` skips it.
"""

from __future__ import annotations

import grpc

from server.ray_serve.rpcs import CallFailed, answers_recommender_rpcs

READS = frozenset({"Recommend", "RecommendBatch", "Embed", "GetInfo"})
READ_ATTEMPTS = 3  # a second replica is enough unless several die at once
REPLICA_LOST = "the replica serving this call stopped; retry (a write's request_id keeps it applied once)"
OK = grpc.StatusCode.OK.value[0]


def replica_lost_errors() -> tuple[type[BaseException], ...]:
    from ray.exceptions import ActorUnavailableError, RayActorError
    from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError

    return RayActorError, ActorUnavailableError, ReplicaUnavailableError, DeploymentUnavailableError


@answers_recommender_rpcs
class RecommenderIngress:
    """Deployment body (server/ray_serve/app.py); `engine` is the handle of the engine replicas."""

    def __init__(self, engine) -> None:
        from ray.serve.exceptions import BackPressureError

        self.engine = engine
        self.lost = replica_lost_errors()
        self.back_pressure = BackPressureError

    async def _forward(self, method: str, request, grpc_context):
        for _ in range(READ_ATTEMPTS if method in READS else 1):
            try:
                response, code, details = await self.engine.call.remote(method, request, grpc_context)
                break
            except self.back_pressure:
                response, code = None, grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
                details = "server is at capacity; retry with backoff"
                break
            except self.lost:
                response, code, details = None, grpc.StatusCode.UNAVAILABLE.value[0], REPLICA_LOST
        if code != OK:
            grpc_context.set_code(_status(code))
            grpc_context.set_details(details)
            raise CallFailed(details)
        return response

    async def _ready(self) -> bool:
        """An engine replica is ready (the health check is a read: retried the same way)."""
        for _ in range(READ_ATTEMPTS):
            try:
                return await self.engine.ready.remote()
            except self.lost:
                continue
        return False


def _status(code: int) -> grpc.StatusCode:
    return next(s for s in grpc.StatusCode if s.value[0] == code)
