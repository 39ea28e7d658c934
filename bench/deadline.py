"""A heavy RecommendBatch with a short deadline: does it block the loop, does it keep computing?

    python bench/deadline.py [--bundle DIR] [--trials 5] [--deadline-ms 200]

`recserve serve` (read-only, query cache off) in a child. Each trial sends the heaviest batch
that fits the message limit (as many requests as allowed, k as large as fits, diversity 1,
explain) with a --deadline-ms deadline, while a thread checks grpc.health.v1 every 10 ms.
Reported per trial: the batch's status; the slowest health check while the batch was
running and for 2 s after; the server's CPU seconds in the 2 s after the deadline (near 0
when the work stopped); what the server counted for RecommendBatch.
Bar (issue 10): no health check slower than 100 ms, and the work stops at the deadline.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from protos import recommender_pb2 as pb  # noqa: E402
from protos import recommender_pb2_grpc  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def counted(metrics_port: int) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    return {code: float(v) for code, v in
            re.findall(r'recserve_requests_total\{code="(\w+)",method="RecommendBatch"\} (\S+)', body)}


def heaviest_batch(queries: int) -> pb.RecommendBatchRequest:
    """The largest k the server's own check accepts for `queries` explained, diversified requests
    (default limits and message size, as the child serves with)."""
    from server.requests import LimitsConfig
    from server.service.app import ServerConfig
    from server.service.validation import check_response_fits
    from server.errors import InvalidRequest

    limits, max_bytes = LimitsConfig(), ServerConfig().max_message_bytes
    queries = min(queries, limits.max_batch_requests)
    k = limits.max_k
    while k > 1:
        batch = pb.RecommendBatchRequest(requests=[
            pb.RecommendRequest(query=f"heavy deadline probe {i} {time.time()}", k=k, diversity=1.0, explain=True)
            for i in range(queries)])
        try:
            check_response_fits(batch.requests, limits, max_bytes)
            return batch
        except InvalidRequest:
            k = k * 3 // 4
    raise RuntimeError("no batch size fits")


def trial(stub, health, pid: int, metrics_port: int, queries: int, deadline_s: float) -> dict:
    batch = heaviest_batch(queries)
    slowest, stop = [0.0], threading.Event()

    def poll() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            slowest[0] = max(slowest[0], time.perf_counter() - started)
            time.sleep(0.01)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    idle_before = cpu_seconds(pid)
    time.sleep(2.0)  # the same 2 s with only the health checks: the baseline
    idle_cpu = cpu_seconds(pid) - idle_before
    before = counted(metrics_port)
    sent = time.perf_counter()
    try:
        stub.RecommendBatch(batch, timeout=deadline_s)
        status = "OK"
    except grpc.RpcError as exc:
        status = exc.code().name
    answered = time.perf_counter() - sent
    time.sleep(max(0.0, deadline_s - answered) + 0.05)
    cpu_before = cpu_seconds(pid)
    time.sleep(2.0)
    cpu_after = cpu_seconds(pid)
    stop.set()
    poller.join()
    after = counted(metrics_port)
    return {"requests": len(batch.requests), "k": batch.requests[0].k, "status": status,
            "answered_after_ms": round(answered * 1000, 1), "slowest_health_ms": round(slowest[0] * 1000, 1),
            "server_cpu_s_in_2s_after_deadline": round(cpu_after - cpu_before, 3),
            "server_cpu_s_in_2s_health_only": round(idle_cpu, 3),
            "server_counted": {c: int(after.get(c, 0) - before.get(c, 0)) for c in after
                               if after.get(c, 0) != before.get(c, 0)}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", help="bundle to serve (default: the default demo bundle)")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--deadline-ms", type=float, default=200.0)
    parser.add_argument("--queries", type=int, default=64, help="requests in the batch")
    parser.add_argument("--port", type=int, default=29471)
    args = parser.parse_args()
    if args.bundle:
        bundle = Path(args.bundle)
    else:
        from train.default_bundle import default_bundle_path

        bundle = default_bundle_path()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RECSERVE_BATCHER_CACHE_SIZE": "0"}
    server = subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "serve", "--bundle", str(bundle), "--host", "127.0.0.1",
         "--port", str(args.port), "--metrics-port", str(args.port + 1), "--read-only", "--log-level", "WARNING"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
    try:
        for line in server.stdout:
            if "serving bundle" in line:
                break
        threading.Thread(target=lambda: [None for _ in server.stdout], daemon=True).start()
        channel = grpc.insecure_channel(f"127.0.0.1:{args.port}")
        stub = recommender_pb2_grpc.RecommenderStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        started = time.perf_counter()  # the same batch without a short deadline: what was stopped
        full = stub.RecommendBatch(heaviest_batch(args.queries), timeout=120)
        full_s = time.perf_counter() - started
        full_items = sum(len(r.items) for r in full.responses)
        results = [trial(stub, health, server.pid, args.port + 1, args.queries, args.deadline_ms / 1000)
                   for _ in range(args.trials)]
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(json.dumps(results, indent=1))
    print(f"the same batch with a 120 s deadline: answered in {full_s * 1000:.0f} ms ({full_items} items)")
    print("| trial | batch | status | answered after ms | slowest health ms | server CPU s, 2 s after "
          "(health checks only) | counted |")
    print("|---:|---|---|---:|---:|---:|---|")
    for i, r in enumerate(results, 1):
        print(f"| {i} | {r['requests']} x k={r['k']} | {r['status']} | {r['answered_after_ms']} | "
              f"{r['slowest_health_ms']} | {r['server_cpu_s_in_2s_after_deadline']} ({r['server_cpu_s_in_2s_health_only']}) | "
              f"{r['server_counted']} |")
    ok = all(r["slowest_health_ms"] <= 100 and r["status"] == "DEADLINE_EXCEEDED" for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
