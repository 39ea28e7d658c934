"""Blocking Python client of the Recommender service.

One client holds one channel (one HTTP/2 connection, reused by every call) until `close()`.
Each call gets the default deadline unless given one, retries UNAVAILABLE with backoff within
that deadline, sends the auth metadata, and returns typed results (or the protobuf with
`raw=True`). Failures raise `clients.errors.RecommenderError` subclasses.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import grpc

from clients.errors import error_from_rpc
from clients.options import AttemptBudget, ClientOptions, create_channel
from clients.results import (
    Embeddings, Info, ItemFilter, Recommendation, ReloadResult, WriteResult, as_pb_list,
    recommend_request,
)
from protos import recommender_pb2 as pb
from protos import recommender_pb2_grpc as pb_grpc

# Methods whose repetition could change the outcome are not retried even on UNAVAILABLE.
# None today: the write calls carry a request_id (new_request_id), the same on every attempt,
# and the server answers a repeated id as a duplicate without applying it again.
NOT_IDEMPOTENT: frozenset[str] = frozenset()


def new_request_id() -> str:
    """A fresh idempotency key for one logical write (reused by its retries)."""
    return uuid.uuid4().hex


class RecommenderClient:
    """Sync client: `with RecommenderClient("localhost:50051") as client: client.recommend("lantern")`."""

    def __init__(self, target: str | None = None, *, options: ClientOptions | None = None,
                 channel: grpc.Channel | None = None) -> None:
        options = options or ClientOptions()
        self.options = options.replace(target=target) if target else options
        self._owns_channel = channel is None
        self._channel = channel or create_channel(self.options)
        self._stub = pb_grpc.RecommenderStub(self._channel)
        self._metadata = self.options.call_metadata()

    # ---- reads --------------------------------------------------------------------------

    def recommend(self, query: str | None = None, *, user_id: str | None = None,
                  history: Sequence[str] = (), k: int = 10, filter: ItemFilter | None = None,
                  diversity: float = 0.0, explain: bool = False, deadline_s: float | None = None,
                  raw: bool = False) -> Recommendation | pb.RecommendResponse:
        """Items for a text query, a known user, a caller-given history (most recent last), or a mix."""
        request = recommend_request(query, user_id=user_id, history=history, k=k, filter=filter,
                                    diversity=diversity, explain=explain)
        return self.recommend_request(request, deadline_s=deadline_s, raw=raw)

    def recommend_request(self, request: pb.RecommendRequest, *, deadline_s: float | None = None,
                          raw: bool = False) -> Recommendation | pb.RecommendResponse:
        """Send a prepared RecommendRequest."""
        started = time.monotonic()
        response = self._call("Recommend", request, deadline_s)
        return response if raw else Recommendation.from_pb(response, time.monotonic() - started)

    def recommend_batch(self, requests: Iterable[pb.RecommendRequest], *,
                        deadline_s: float | None = None, raw: bool = False
                        ) -> list[Recommendation] | pb.RecommendBatchResponse:
        """Many requests in one call; results in request order."""
        response = self._call("RecommendBatch",
                              pb.RecommendBatchRequest(requests=list(requests)), deadline_s)
        if raw:
            return response
        return [Recommendation.from_pb(r) for r in response.responses]

    def embed(self, texts: Sequence[str], *, deadline_s: float | None = None,
              raw: bool = False) -> Embeddings | pb.EmbedResponse:
        """L2-normalised embeddings of `texts` with the served encoder."""
        response = self._call("Embed", pb.EmbedRequest(texts=list(texts)), deadline_s)
        return response if raw else Embeddings.from_pb(response)

    def info(self, *, deadline_s: float | None = None, raw: bool = False) -> Info | pb.GetInfoResponse:
        """Version and summary of the served bundle."""
        response = self._call("GetInfo", pb.GetInfoRequest(), deadline_s)
        return response if raw else Info.from_pb(response)

    # ---- writes -------------------------------------------------------------------------

    def upsert_items(self, items: Iterable[Any], *, deadline_s: float | None = None,
                     request_id: str | None = None) -> WriteResult:
        """Insert or replace items (`results.Item` or protobuf Item); durable when this returns.
        `request_id`: idempotency key (default: a fresh one, reused by the retries)."""
        request = pb.UpsertItemsRequest(items=as_pb_list(items), request_id=request_id or new_request_id())
        return WriteResult.from_pb(self._call("UpsertItems", request, deadline_s))

    def delete_items(self, item_ids: Iterable[str], *, deadline_s: float | None = None,
                     request_id: str | None = None) -> WriteResult:
        request = pb.DeleteItemsRequest(item_ids=list(item_ids), request_id=request_id or new_request_id())
        return WriteResult.from_pb(self._call("DeleteItems", request, deadline_s))

    def record_interactions(self, events: Iterable[Any], *, deadline_s: float | None = None,
                            request_id: str | None = None) -> WriteResult:
        """Record user events (`results.Interaction` or protobuf); a retry after a lost answer
        carries the same request_id, so the events are counted once."""
        request = pb.RecordInteractionsRequest(events=as_pb_list(events),
                                               request_id=request_id or new_request_id())
        return WriteResult.from_pb(self._call("RecordInteractions", request, deadline_s))

    def reload(self, bundle_path: str, *, deadline_s: float | None = None) -> ReloadResult:
        """Ask the server to load, verify, warm and swap to another bundle."""
        request = pb.ReloadRequest(bundle_path=str(bundle_path))
        return ReloadResult.from_pb(self._call("Reload", request, deadline_s))

    # ---- health -------------------------------------------------------------------------

    def health(self, service: str = "", *, deadline_s: float | None = None) -> str:
        """grpc.health.v1 status name: SERVING, NOT_SERVING, SERVICE_UNKNOWN, ..."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc  # only callers of health pay

        stub = health_pb2_grpc.HealthStub(self._channel)
        response = self._invoke("Check", stub.Check, health_pb2.HealthCheckRequest(service=service),
                                deadline_s)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def wait_until_serving(self, timeout_s: float = 60.0, *, poll_s: float = 0.2) -> None:
        """Block until health says SERVING; raise TimeoutError after `timeout_s`."""
        end = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < end:
            try:
                last = self.health(deadline_s=max(min(1.0, end - time.monotonic()), 0.01))
                if last == "SERVING":
                    return
            except grpc.RpcError as exc:
                last = str(exc)
            time.sleep(poll_s)
        raise TimeoutError(f"{self.options.target} not SERVING after {timeout_s:.1f}s ({last})")

    # ---- plumbing -----------------------------------------------------------------------

    def _call(self, method: str, request: Any, deadline_s: float | None) -> Any:
        return self._invoke(method, getattr(self._stub, method), request, deadline_s)

    def _invoke(self, method: str, stub_method: Any, request: Any, deadline_s: float | None) -> Any:
        budget = AttemptBudget(self.options.retry, deadline_s or self.options.deadline_s,
                               idempotent=method not in NOT_IDEMPOTENT)
        while True:
            try:
                return stub_method(request, timeout=budget.next_timeout_s(),
                                   metadata=self._metadata, wait_for_ready=self.options.wait_for_ready)
            except grpc.RpcError as exc:
                pause = budget.pause_before_retry(exc.code())
                if pause is None:
                    raise error_from_rpc(exc, method=method, attempts=budget.attempts) from None
                time.sleep(pause)

    def close(self) -> None:
        """Close the channel, unless the caller passed it in (then it is theirs to close)."""
        if self._owns_channel:
            self._channel.close()

    def __enter__(self) -> RecommenderClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
