"""A fake Recommender server the client and load-harness tests control.

It speaks the real proto over real gRPC (grpc.aio on 127.0.0.1, port 0) in a background
thread with its own event loop, so blocking code under test (the sync client, the load
harness's parent process) and asyncio code can both call it. Tests steer it through
`Behaviour`: latency, the first N calls failing with a code, every n-th call overloaded.
It stands in for server/ until the real server exists; it tests the clients, not the server.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field

import grpc
import pytest
from grpc_health.v1 import _async as health_async
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos import recommender_pb2 as pb
from protos import recommender_pb2_grpc as pb_grpc

FAKE_TIMINGS = pb.Timings(queue_us=100, encode_us=2000, retrieve_us=300, rank_us=400, total_us=2800)
FAKE_VERSION = "fake-20240101"


@dataclass
class Behaviour:
    latency_s: float = 0.0
    """Sleep before answering (without blocking the server's loop)."""
    fail_first: int = 0
    """The first N calls (any method) fail with fail_code."""
    fail_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    overload_every: int = 0
    """Every n-th Recommend answers RESOURCE_EXHAUSTED (0 = never)."""
    calls: list[tuple[str, dict, str]] = field(default_factory=list)
    """(method, metadata, peer) of every call received."""
    requests: list[object] = field(default_factory=list)
    recommends: int = 0
    sequence: int = 0


class FakeRecommender(pb_grpc.RecommenderServicer):
    def __init__(self, behaviour: Behaviour) -> None:
        self.b = behaviour

    async def _enter(self, method: str, request: object, context: grpc.aio.ServicerContext) -> None:
        b = self.b
        b.calls.append((method, dict(context.invocation_metadata()), context.peer()))
        b.requests.append(request)
        if b.fail_first > 0:
            b.fail_first -= 1
            await context.abort(b.fail_code, "fake failure")
        if b.latency_s:
            await asyncio.sleep(b.latency_s)

    def _answer(self, request: pb.RecommendRequest) -> pb.RecommendResponse:
        k = request.k or 10
        basis = request.query or request.user_id or ",".join(request.history)
        items = []
        for i in range(k):
            item = pb.ScoredItem(item_id=f"ITEM-{i}", title=f"THING {i} FOR {basis.upper()}",
                                 score=1.0 - i / (k + 1), retrieval_score=0.9 - i / (k + 2))
            if request.explain:
                item.reason = f"often bought with ITEM-{i + 100}"
                item.contributions.add(feature="co_occurrence", value=0.5, weight=0.4, contribution=0.2)
            items.append(item)
        return pb.RecommendResponse(items=items, bundle_version=FAKE_VERSION, timings=FAKE_TIMINGS)

    async def Recommend(self, request, context):
        await self._enter("Recommend", request, context)
        self.b.recommends += 1
        if self.b.overload_every and self.b.recommends % self.b.overload_every == 0:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full")
        return self._answer(request)

    async def RecommendBatch(self, request, context):
        await self._enter("RecommendBatch", request, context)
        return pb.RecommendBatchResponse(responses=[self._answer(r) for r in request.requests])

    async def Embed(self, request, context):
        await self._enter("Embed", request, context)
        embeddings = [pb.Embedding(values=[0.5, 0.5, 0.5, 0.5]) for _ in request.texts]
        return pb.EmbedResponse(embeddings=embeddings, dim=4, bundle_version=FAKE_VERSION,
                                timings=FAKE_TIMINGS)

    async def GetInfo(self, request, context):
        await self._enter("GetInfo", request, context)
        return pb.GetInfoResponse(bundle_version=FAKE_VERSION, model="fake-encoder", precision="int8",
                                  dim=4, max_length=64, index_size=3000, live_items=2990,
                                  execution_provider="CPUExecutionProvider",
                                  manifest_json=json.dumps({"format_version": 1}))

    async def _write(self, method, request, context, applied):
        await self._enter(method, request, context)
        self.b.sequence += 1
        return pb.WriteResponse(sequence=self.b.sequence, applied=applied)

    async def UpsertItems(self, request, context):
        return await self._write("UpsertItems", request, context, len(request.items))

    async def DeleteItems(self, request, context):
        return await self._write("DeleteItems", request, context, len(request.item_ids))

    async def RecordInteractions(self, request, context):
        return await self._write("RecordInteractions", request, context, len(request.events))

    async def Reload(self, request, context):
        await self._enter("Reload", request, context)
        return pb.ReloadResponse(previous_version=FAKE_VERSION, bundle_version="fake-2",
                                 replayed_writes=self.b.sequence)


class FakeServer:
    """The fake servicer on 127.0.0.1:<free port>, served from a background thread."""

    def __init__(self, behaviour: Behaviour | None = None,
                 credentials: grpc.ServerCredentials | None = None) -> None:
        self.behaviour = behaviour or Behaviour()
        self._credentials = credentials
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)
        self.port = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> FakeServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake server did not start")
        return self

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = grpc.aio.server()
        pb_grpc.add_RecommenderServicer_to_server(FakeRecommender(self.behaviour), server)
        health = health_async.HealthServicer()
        await health.set("", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        address = "127.0.0.1:0"
        if self._credentials is None:
            self.port = server.add_insecure_port(address)
        else:
            self.port = server.add_secure_port(address, self._credentials)
        await server.start()
        self._ready.set()
        await self._stop.wait()
        await server.stop(0)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def fake_server():
    server = FakeServer().start()
    yield server
    server.stop()


@pytest.fixture
def dead_target() -> str:
    """An address nothing listens on (a port bound then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"
