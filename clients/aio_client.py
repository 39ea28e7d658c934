"""asyncio Python client of the Recommender service: the same calls as `RecommenderClient`.

Create it inside the event loop that will use it (grpc.aio binds a channel to that loop):
`async with AsyncRecommenderClient("localhost:50051") as client: await client.recommend(...)`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from typing import Any

import grpc

from clients.client import NOT_IDEMPOTENT, new_request_id
from clients.errors import error_from_rpc
from clients.options import AttemptBudget, ClientOptions, create_aio_channel
from clients.results import (
    Embeddings, Info, ItemFilter, Recommendation, ReloadResult, WriteResult, as_pb_list,
    recommend_request,
)
from protos import recommender_pb2 as pb
from protos import recommender_pb2_grpc as pb_grpc


class AsyncRecommenderClient:
    """asyncio client; one channel (one connection) reused by every call until `close()`."""

    def __init__(self, target: str | None = None, *, options: ClientOptions | None = None,
                 channel: grpc.aio.Channel | None = None) -> None:
        options = options or ClientOptions()
        self.options = options.replace(target=target) if target else options
        self._owns_channel = channel is None
        self._channel = channel or create_aio_channel(self.options)
        self._stub = pb_grpc.RecommenderStub(self._channel)
        self._metadata = self.options.call_metadata()

    async def recommend(self, query: str | None = None, *, user_id: str | None = None,
                        history: Sequence[str] = (), k: int = 10, filter: ItemFilter | None = None,
                        diversity: float = 0.0, explain: bool = False,
                        deadline_s: float | None = None, raw: bool = False
                        ) -> Recommendation | pb.RecommendResponse:
        """Items for a text query, a known user, a caller-given history (most recent last), or a mix."""
        request = recommend_request(query, user_id=user_id, history=history, k=k, filter=filter,
                                    diversity=diversity, explain=explain)
        return await self.recommend_request(request, deadline_s=deadline_s, raw=raw)

    async def recommend_request(self, request: pb.RecommendRequest, *,
                                deadline_s: float | None = None, raw: bool = False
                                ) -> Recommendation | pb.RecommendResponse:
        started = time.monotonic()
        response = await self._call("Recommend", request, deadline_s)
        return response if raw else Recommendation.from_pb(response, time.monotonic() - started)

    async def recommend_batch(self, requests: Iterable[pb.RecommendRequest], *,
                              deadline_s: float | None = None, raw: bool = False
                              ) -> list[Recommendation] | pb.RecommendBatchResponse:
        response = await self._call("RecommendBatch",
                                    pb.RecommendBatchRequest(requests=list(requests)), deadline_s)
        if raw:
            return response
        return [Recommendation.from_pb(r) for r in response.responses]

    async def embed(self, texts: Sequence[str], *, deadline_s: float | None = None,
                    raw: bool = False) -> Embeddings | pb.EmbedResponse:
        response = await self._call("Embed", pb.EmbedRequest(texts=list(texts)), deadline_s)
        return response if raw else Embeddings.from_pb(response)

    async def info(self, *, deadline_s: float | None = None,
                   raw: bool = False) -> Info | pb.GetInfoResponse:
        response = await self._call("GetInfo", pb.GetInfoRequest(), deadline_s)
        return response if raw else Info.from_pb(response)

    async def upsert_items(self, items: Iterable[Any], *, deadline_s: float | None = None,
                           request_id: str | None = None) -> WriteResult:
        request = pb.UpsertItemsRequest(items=as_pb_list(items), request_id=request_id or new_request_id())
        return WriteResult.from_pb(await self._call("UpsertItems", request, deadline_s))

    async def delete_items(self, item_ids: Iterable[str], *, deadline_s: float | None = None,
                           request_id: str | None = None) -> WriteResult:
        request = pb.DeleteItemsRequest(item_ids=list(item_ids), request_id=request_id or new_request_id())
        return WriteResult.from_pb(await self._call("DeleteItems", request, deadline_s))

    async def record_interactions(self, events: Iterable[Any], *, deadline_s: float | None = None,
                                  request_id: str | None = None) -> WriteResult:
        request = pb.RecordInteractionsRequest(events=as_pb_list(events),
                                               request_id=request_id or new_request_id())
        return WriteResult.from_pb(await self._call("RecordInteractions", request, deadline_s))

    async def reload(self, bundle_path: str, *, deadline_s: float | None = None) -> ReloadResult:
        request = pb.ReloadRequest(bundle_path=str(bundle_path))
        return ReloadResult.from_pb(await self._call("Reload", request, deadline_s))

    async def health(self, service: str = "", *, deadline_s: float | None = None) -> str:
        """grpc.health.v1 status name: SERVING, NOT_SERVING, SERVICE_UNKNOWN, ..."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self._channel)
        response = await self._invoke("Check", stub.Check,
                                      health_pb2.HealthCheckRequest(service=service), deadline_s)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    async def _call(self, method: str, request: Any, deadline_s: float | None) -> Any:
        return await self._invoke(method, getattr(self._stub, method), request, deadline_s)

    async def _invoke(self, method: str, stub_method: Any, request: Any,
                      deadline_s: float | None) -> Any:
        budget = AttemptBudget(self.options.retry, deadline_s or self.options.deadline_s,
                               idempotent=method not in NOT_IDEMPOTENT)
        while True:
            try:
                return await stub_method(request, timeout=budget.next_timeout_s(),
                                         metadata=self._metadata,
                                         wait_for_ready=self.options.wait_for_ready)
            except grpc.RpcError as exc:
                pause = budget.pause_before_retry(exc.code())
                if pause is None:
                    raise error_from_rpc(exc, method=method, attempts=budget.attempts) from None
                await asyncio.sleep(pause)

    async def close(self) -> None:
        if self._owns_channel:
            await self._channel.close()

    async def __aenter__(self) -> AsyncRecommenderClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
