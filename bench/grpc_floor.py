"""The Python gRPC floor: a Recommender that does no work, and RecommendBatch throughput.

    python bench/grpc_floor.py noop --port 50399            # serve canned 10-item answers
    python bench/grpc_floor.py batch --target H:P --batch 32 --concurrency 4 --seconds 10

`noop` answers Recommend with a fixed 10-item response built once: load-testing it with the
same pinning as bench/serve.py shows how many calls/s grpc.aio itself allows on one core,
the ceiling for any per-call Python server here. `batch` drives RecommendBatch (many
requests per call, the API's path for high-throughput callers) with real product-name
queries and reports recommendations/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import grpc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from protos import recommender_pb2 as pb  # noqa: E402
from protos import recommender_pb2_grpc as pb_grpc  # noqa: E402


class NoOpRecommender(pb_grpc.RecommenderServicer):
    def __init__(self) -> None:
        self.answer = pb.RecommendResponse(
            items=[pb.ScoredItem(item_id=str(i), title=f"ITEM {i}", score=1.0 - i / 10) for i in range(10)],
            bundle_version="noop", timings=pb.Timings(total_us=1))

    async def Recommend(self, request, context):
        return self.answer


async def serve_noop(port: int) -> None:
    server = grpc.aio.server()
    pb_grpc.add_RecommenderServicer_to_server(NoOpRecommender(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"noop serving on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


async def drive_batches(target: str, batch: int, concurrency: int, seconds: float) -> dict:
    from clients.loadtest.workload import default_workload

    texts = [r.query for r in default_workload().requests if r.query and not r.user_id and not r.history]
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.RecommenderStub(channel)
        stop = time.monotonic() + seconds
        latencies: list[float] = []
        done = [0]

        async def caller(offset: int) -> None:
            i = offset
            while time.monotonic() < stop:
                requests = [pb.RecommendRequest(query=texts[(i + j) % len(texts)] + f" {i}", k=10)
                            for j in range(batch)]  # suffix: no two calls share texts
                i += batch * concurrency
                started = time.monotonic()
                await stub.RecommendBatch(pb.RecommendBatchRequest(requests=requests), timeout=30)
                latencies.append(time.monotonic() - started)
                done[0] += batch

        started = time.monotonic()
        await asyncio.gather(*(caller(c * batch) for c in range(concurrency)))
        elapsed = time.monotonic() - started
    latencies.sort()
    return {"batch": batch, "concurrency": concurrency, "recommendations_per_s": round(done[0] / elapsed, 1),
            "call_p50_ms": round(1000 * latencies[len(latencies) // 2], 2),
            "call_p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    noop = sub.add_parser("noop")
    noop.add_argument("--port", type=int, default=50399)
    batch = sub.add_parser("batch")
    batch.add_argument("--target", required=True)
    batch.add_argument("--batch", type=int, default=32)
    batch.add_argument("--concurrency", type=int, default=4)
    batch.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    if args.mode == "noop":
        asyncio.run(serve_noop(args.port))
    else:
        print(json.dumps(asyncio.run(drive_batches(args.target, args.batch, args.concurrency, args.seconds))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
