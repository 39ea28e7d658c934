"""Ray Serve capacity (1 vs 2 replicas) and what callers see when a replica is killed under load.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/ray_serve.py \
        --bundle ~/.cache/recserve/default-minilm-int8-demo-v2 --replicas 1,2 --seconds 20 --kill

For each ingress setting (--ingress 1,0: with and without the retrying ingress) and replica count: a fresh local Ray (num_cpus = --cpus), the bundle deployed with
replicas sharing those CPUs, then --concurrency closed-loop callers over real gRPC through
Ray's proxy send Recommend (text queries from the demo catalog) for --seconds. With --kill,
one replica actor is killed (ray.kill) a third of the way in; every non-OK status is
counted by code, and a call that got UNAVAILABLE is retried (up to 3 times) as
clients/client.py does.
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_one_replica() -> str:
    import ray

    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if "Recommender" in a["name"] and a["namespace"] == "serve"]
    victim = sorted(names)[0]
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    return victim


def load(port: int, queries: list[str], concurrency: int, seconds: float, kill_at: float | None) -> dict:
    from protos import recommender_pb2 as pb
    from protos import recommender_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = recommender_pb2_grpc.RecommenderStub(channel)
    latencies: list[float] = []
    codes: Counter = Counter()
    failed: Counter = Counter()
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def caller(seed: int) -> None:
        rng = np.random.default_rng(seed)
        while time.monotonic() < stop_at:
            request = pb.RecommendRequest(query=queries[rng.integers(len(queries))], k=10)
            t0 = time.perf_counter()
            for attempt in range(4):
                try:
                    stub.Recommend(request, timeout=30)
                    with lock:
                        latencies.append(time.perf_counter() - t0)
                    break
                except grpc.RpcError as exc:
                    with lock:
                        codes[exc.code().name] += 1
                    if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == 3:
                        with lock:
                            failed[exc.code().name] += 1
                        break
                    time.sleep(0.05 * (attempt + 1))

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(concurrency)]
    started = time.monotonic()
    for t in threads:
        t.start()
    victim = None
    if kill_at is not None:
        time.sleep(kill_at)
        victim = kill_one_replica()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    channel.close()
    ms = np.asarray(latencies) * 1e3
    return {"ok": len(latencies), "qps": round(len(latencies) / elapsed, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
            "status_codes_seen": dict(codes), "failed_after_retries": dict(failed),
            "killed": victim}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--replicas", default="1,2")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--kill", action="store_true")
    parser.add_argument("--ingress", default="1,0",
                        help="ingress replicas to compare, run in turn (0 = the proxy calls the engine)")
    args = parser.parse_args()

    import ray
    from ray import serve

    from export.catalog import read_catalog
    from export.demo import demo_catalog_path
    from server.live.config import LiveConfig
    from server.ray_serve.app import RayServeConfig, deploy
    from server.service.app import AllConfigs

    queries = [r.title for r in read_catalog(demo_catalog_path())][:500]
    results = {}
    runs = [(int(i), int(r)) for i in args.ingress.split(",") for r in args.replicas.split(",")]
    for n, (ingress, replicas) in enumerate(runs):
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        name = f"ingress{ingress}_{replicas}_replicas"
        if runs.count((ingress, replicas)) > 1:  # a repeated pair keeps each pass's figures
            name += f"_pass{runs[:n].count((ingress, replicas)) + 1}"
        try:
            port, _ = deploy(args.bundle, AllConfigs(live=LiveConfig(enabled=False)), RayServeConfig(
                replicas=replicas, replica_cpus=args.cpus / replicas, port=free_port(),
                http_port=free_port(), ingress_replicas=ingress))
            load(port, queries, args.concurrency, 3, None)  # warm
            results[name] = load(port, queries, args.concurrency, args.seconds, None)
            if args.kill and replicas > 1:
                results[f"{name}_kill_one"] = load(
                    port, queries, args.concurrency, args.seconds, args.seconds / 3)
        finally:
            serve.shutdown()
            ray.shutdown()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
