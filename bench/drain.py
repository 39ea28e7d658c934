"""Drain drill: SIGTERM with N calls in flight; every one must come back OK and the exit be 0.

    python bench/drain.py [--bundle DIR] [--calls 100] [--trials 3]

Each trial starts `recserve serve` (one text per inference batch, so the calls really are in
flight; a door wide enough for all of them), sends N Recommend calls with distinct texts,
sends SIGTERM 50 ms later, and counts the answers by status code, the time from SIGTERM to
exit, and the exit status. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import grpc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from protos import recommender_pb2 as pb  # noqa: E402
from protos import recommender_pb2_grpc  # noqa: E402


async def trial(bundle: Path, port: int, calls: int, proxy: bool = False) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RECSERVE_BATCHER_MAX_BATCH_SIZE": "1",
           "RECSERVE_SERVER_MAX_CONCURRENT_CALLS": str(2 * calls)}
    server = subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "serve", "--bundle", str(bundle), "--host", "127.0.0.1",
         "--port", str(port), "--metrics-port", "-1", "--read-only", "--log-level", "WARNING",
         *(["--admission-proxy"] if proxy else [])],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
    for line in server.stdout:
        if "serving bundle" in line:
            break
    else:
        raise RuntimeError(f"server did not start (rc={server.wait()})")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = recommender_pb2_grpc.RecommenderStub(channel)
        await stub.Recommend(pb.RecommendRequest(query="warm", k=3))
        futures = [asyncio.ensure_future(stub.Recommend(
            pb.RecommendRequest(query=f"drain drill {time.time()} {i} " * 8, k=10), timeout=30))
            for i in range(calls)]
        await asyncio.sleep(0.05)
        in_flight = sum(not f.done() for f in futures)
        server.send_signal(signal.SIGTERM)
        sigterm = time.monotonic()
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
    codes = Counter("OK" if not isinstance(o, BaseException) else
                    (o.code().name if isinstance(o, grpc.aio.AioRpcError) else type(o).__name__) for o in outcomes)
    code = await asyncio.to_thread(server.wait, 60)
    return {"in_flight_at_sigterm": in_flight, "codes": dict(codes), "exit": code,
            "exit_after_s": round(time.monotonic() - sigterm, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", help="bundle to serve (default: the default demo bundle)")
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--port", type=int, default=29421)
    parser.add_argument("--admission-proxy", action="store_true", help="serve behind the admission proxy")
    args = parser.parse_args()
    if args.bundle:
        bundle = Path(args.bundle)
    else:
        from train.default_bundle import default_bundle_path

        bundle = default_bundle_path()
    results = [asyncio.run(trial(bundle, args.port + i, args.calls, args.admission_proxy)) for i in range(args.trials)]
    print("| trial | in flight at SIGTERM | answers | exit | SIGTERM to exit (s) |\n|---:|---:|---|---:|---:|")
    for i, r in enumerate(results, 1):
        print(f"| {i} | {r['in_flight_at_sigterm']} | {r['codes']} | {r['exit']} | {r['exit_after_s']} |")
    ok = all(r["codes"] == {"OK": args.calls} and r["exit"] == 0 for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
