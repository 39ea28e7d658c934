"""recserve.v1.Recommender over grpc.aio: protobuf in, domain call, protobuf out.

Every RPC goes through `_rpc`: auth and readiness checks, the deadline, one error mapping
(status_map). Admission, call metrics and in-flight tracking happen before, at the door
(server/service/door.py). Nothing else happens here.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from typing import TYPE_CHECKING

import grpc
import numpy as np

from export.errors import RecserveError
from protos import recommender_pb2 as pb
from protos import recommender_pb2_grpc as pb_grpc
from server.errors import DeadlineExceeded, InvalidRequest, NotReady
from server.requests import StageTimings
from server.service import write_rpcs
from server.service.convert import query_from_proto, result_to_proto, timings_to_proto
from server.service.info import public_manifest, public_name
from server.service.status_map import status_for
from server.service.validation import validate_batch, validate_recommend
from server.workers.identity import worker_id

if TYPE_CHECKING:
    from server.service.app import RecserveServer
    from server.serving_slot import ServingSlot

log = logging.getLogger(__name__)


def _rpc(method: str):
    def wrap(handler):
        @functools.wraps(handler)
        async def call(self: "RecommenderServicer", request, context: grpc.aio.ServicerContext):
            try:
                state = self._admit(context, method)
                deadline = _deadline(context)
                with state.track():  # a reload retires this state once its calls are done
                    return await handler(self, state, request, deadline)
            except Exception as exc:  # noqa: BLE001 - mapped to a status in one place
                status, message = status_for(exc)
                if not isinstance(exc, RecserveError):
                    log.exception("%s failed", method)
                # set_code instead of abort(): an aborted handler makes grpc.aio's stop(grace)
                # stop waiting for the other in-flight calls (grpc/grpc#37239).
                context.set_code(status)
                context.set_details(message)
                return None

        return call

    return wrap


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The caller's deadline on the time.monotonic() clock; DeadlineExceeded if it has passed."""
    remaining = context.time_remaining()
    if remaining is None:
        return None
    if remaining <= 0:
        raise DeadlineExceeded("the deadline passed before the call started")
    return time.monotonic() + remaining


class RecommenderServicer(pb_grpc.RecommenderServicer):
    def __init__(self, server: "RecserveServer", slot: "ServingSlot") -> None:
        self.server = server  # security, limits, config and the write RPCs' collaborators
        self.slot = slot
        self._worker_id = worker_id()
        self.metrics = server.metrics
        self.limits = server.limits

    def _admit(self, context: grpc.aio.ServicerContext, method: str):
        self.server.security.authorize(method, context)  # scopes per method: server/service/auth.py
        state = self.slot.state
        if state is None:  # draining still answers: every call received before the port closes
            raise NotReady("server is not serving yet (starting up)")
        return state

    @_rpc("Recommend")
    async def Recommend(self, state, request: pb.RecommendRequest, deadline):
        validate_recommend(request, self.limits)
        query = query_from_proto(request).validated(self.limits)
        if request.min_sequence > 0 and self.slot.live is not None:  # read-your-writes
            await self.slot.live.wait_applied(request.min_sequence, deadline)
        response = result_to_proto(await state.engine.recommend(query, deadline))
        response.timings.worker_id = self._worker_id  # which of the --workers processes answered
        return response

    @_rpc("RecommendBatch")
    async def RecommendBatch(self, state, request: pb.RecommendBatchRequest, deadline):
        validate_batch(request, self.limits, self.server.config.max_message_bytes)
        queries = [query_from_proto(r).validated(self.limits) for r in request.requests]
        results = await state.engine.recommend_many(queries, deadline)
        return pb.RecommendBatchResponse(responses=[result_to_proto(r) for r in results])

    @_rpc("Embed")
    async def Embed(self, state, request: pb.EmbedRequest, deadline):
        texts = list(request.texts)
        if not texts or len(texts) > self.limits.max_embed_texts:
            raise InvalidRequest(f"give 1 to {self.limits.max_embed_texts} texts")
        if any(len(t) > self.limits.max_query_chars for t in texts):
            raise InvalidRequest(f"texts must be at most {self.limits.max_query_chars} characters")
        started = time.perf_counter()
        vectors, timing = await state.batcher.embed(texts, deadline)
        timings = StageTimings(queue_us=int(timing.queue_s * 1e6), encode_us=int(timing.encode_s * 1e6),
                               total_us=int((time.perf_counter() - started) * 1e6))
        return pb.EmbedResponse(
            embeddings=[pb.Embedding(values=v.astype(np.float32).tolist()) for v in vectors],
            dim=int(vectors.shape[1]), bundle_version=state.version, timings=timings_to_proto(timings),
        )

    @_rpc("GetInfo")
    async def GetInfo(self, state, request: pb.GetInfoRequest, deadline):
        bundle = state.bundle
        manifest = bundle.manifest
        encoder = manifest.get("encoder") or {}
        return pb.GetInfoResponse(
            bundle_version=state.version,
            model=public_name(str((encoder.get("model") or {}).get("source", ""))),  # no build paths
            precision=str(encoder.get("precision", "")),
            dim=int(bundle.backend.dim),
            max_length=int(bundle.backend.tokenizer.max_length),
            index_size=int(bundle.index.stored_count),
            live_items=int(bundle.index.size),
            execution_provider=bundle.backend.runtime.provider,
            manifest_json=json.dumps(public_manifest({k: v for k, v in manifest.items() if k != "files"})),
            last_applied_sequence=int(getattr(self.server, "last_applied_sequence", 0)),
        )

    # ---- live writes and reload (server/service/write_rpcs.py) -------------------------------

    @_rpc("UpsertItems")
    async def UpsertItems(self, state, request: pb.UpsertItemsRequest, deadline):
        return await write_rpcs.upsert_items(self.server, request, deadline)

    @_rpc("DeleteItems")
    async def DeleteItems(self, state, request: pb.DeleteItemsRequest, deadline):
        return await write_rpcs.delete_items(self.server, request)

    @_rpc("RecordInteractions")
    async def RecordInteractions(self, state, request: pb.RecordInteractionsRequest, deadline):
        return await write_rpcs.record_interactions(self.server, request)

    @_rpc("Reload")
    async def Reload(self, state, request: pb.ReloadRequest, deadline):
        return await write_rpcs.reload(self.server, request, deadline)
