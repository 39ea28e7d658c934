"""Open-loop overload: how fast refusals come back, and what useful throughput is left.

    python bench/overload.py [--bundle DIR] [--factor 3] [--duration 60] [--limiter door|grpc]
                             [--capacity R] [--out bench/out/overload]

1. `recserve serve` in a child pinned to core 0 (one ORT thread, query cache off so every
   call is encoded); the load generator (clients/loadtest's open-loop workers) on core 1.
2. Capacity: closed loop at 32 callers for --capacity-s seconds: OK Recommend/s (or --capacity).
3. Overload: Poisson arrivals at factor x capacity for --duration s, 2 s client deadline.
   Reported per status code: count and latency p50/p99 from the scheduled send; useful
   throughput (OK/s) against capacity; what the server counted (recserve_requests_total)
   against what was sent.

--limiter grpc measures grpc.aio's own `maximum_concurrent_rpcs` instead of recserve's door
(same bound, the door opened wide), which refuses after the handler lookup and is blind to
metrics. --limiter proxy puts the admission proxy (server/admission_proxy.py, HAProxy) in
front, on core 1 with the generator: it refuses at the bound without touching core 0; the
door stays at the same bound behind it. Writes results.json and prints a Markdown table for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import threading
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STAGES = ("queue", "encode", "retrieve", "rank", "total")  # clients/loadtest/records.py order
CODES = {0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 4: "DEADLINE_EXCEEDED", 8: "RESOURCE_EXHAUSTED",
         13: "INTERNAL", 14: "UNAVAILABLE"}

# grpc.aio's limiter instead of the door: the same bound, passed to grpc.aio.server().
GRPC_LIMITER_LAUNCHER = """
import sys, grpc
limit = int(sys.argv.pop(1))
real = grpc.aio.server
grpc.aio.server = lambda *a, **k: real(*a, maximum_concurrent_rpcs=limit, **k)
from clients.cli import main
sys.exit(main(sys.argv[1:]))
"""


def drain_output(process: subprocess.Popen) -> None:
    """Keep reading the server's output so it never blocks on a full pipe (its warnings)."""
    threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()


def start_server(bundle: Path, port: int, metrics_port: int, limiter: str, limit: int) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RECSERVE_BATCHER_CACHE_SIZE": "0"}
    args = ["serve", "--bundle", str(bundle), "--host", "127.0.0.1", "--port", str(port),
            "--metrics-port", str(metrics_port), "--log-level", "WARNING", "--threads", "1", "--read-only"]
    if limiter == "grpc":
        env["RECSERVE_SERVER_MAX_CONCURRENT_CALLS"] = str(10**9)
        cmd = [sys.executable, "-c", GRPC_LIMITER_LAUNCHER, str(limit), *args]
    else:
        env["RECSERVE_SERVER_MAX_CONCURRENT_CALLS"] = str(limit)
        cmd = [sys.executable, "-m", "clients.cli", *args]
    process = subprocess.Popen(["taskset", "-c", "0", *cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env, cwd=REPO)
    seen = []
    for line in process.stdout:
        seen.append(line)
        if re.search(r"serving bundle", line):
            drain_output(process)
            return process
    raise RuntimeError(f"server did not start (rc={process.wait()}):\n{''.join(seen[-20:])}")


def counted_by_server(metrics_port: int) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    counted: dict[str, float] = {}
    for code, value in re.findall(r'recserve_requests_total\{code="(\w+)",method="Recommend"\} (\S+)', body):
        counted[code] = float(value)
    return counted


def percentile_ms(values: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 2) if len(values) else None


def summarize(records, duration_s: float) -> dict:
    latency = records.latency
    by_code = {}
    for code in np.unique(records.code):
        mask = records.code == code
        by_code[CODES.get(int(code), str(int(code)))] = {
            "count": int(mask.sum()), "p50_ms": percentile_ms(latency[mask], 50),
            "p99_ms": percentile_ms(latency[mask], 99)}
    ok_server = records.server_us[records.ok] / 1000
    server_ms = dict(zip(STAGES, np.median(ok_server, axis=0).round(2).tolist())) if len(ok_server) else {}
    return {"sent": len(records), "by_code": by_code, "ok_server_stages_ms_p50": server_ms, "ok_per_s": round(float(records.ok.sum()) / duration_s, 1),
            "generator_late_p99_ms": percentile_ms(records.lateness, 99)}


def run(args: argparse.Namespace) -> dict:
    from clients.loadtest.pool import WorkerPool
    from clients.loadtest.worker import WorkerSetup
    from clients.loadtest.workload import default_workload
    from clients.options import NO_RETRY, ClientOptions
    from server.batching.batcher import BatcherConfig
    from server.service.app import ServerConfig

    bundle = Path(args.bundle) if args.bundle else _default_bundle()
    limit = ServerConfig(max_concurrent_calls=args.limit).concurrency_limit(BatcherConfig())
    os.sched_setaffinity(0, {1})  # the generator (and its spawned workers) on core 1
    server_port = args.port + 2 if args.limiter == "proxy" else args.port
    server = start_server(bundle, server_port, args.port + 1, args.limiter, limit)
    proxy = None
    if args.limiter == "proxy":
        from server.admission_proxy import AdmissionProxy, ProxyPlan

        proxy = AdmissionProxy(ProxyPlan(f"127.0.0.1:{args.port}", (f"127.0.0.1:{server_port}",), limit))
        proxy.start()
    try:
        workload = default_workload().with_mix({"text": 1.0})
        setup = WorkerSetup(ClientOptions(target=f"127.0.0.1:{args.port}", retry=NO_RETRY),
                            workload.serialized(), workload.weights, workload.kinds, seed=7)
        with WorkerPool(setup, workers=1) as pool:
            pool.run_phase(mode="closed", concurrency=16, duration_s=3, deadline_s=5)  # warm
            capacity, stages = args.capacity, {}
            if not capacity:
                phase = pool.run_phase(mode="closed", concurrency=32, duration_s=args.capacity_s, deadline_s=5)
                capacity = float(phase.records.ok.sum()) / args.capacity_s
                ok = phase.records.server_us[phase.records.ok]
                stages = dict(zip(STAGES, (np.median(ok, axis=0) / 1000).round(2).tolist())) if len(ok) else {}
            before = counted_by_server(args.port + 1)
            offered = args.factor * capacity
            phase = pool.run_phase(mode="open", rate=offered, duration_s=args.duration, deadline_s=2.0)
            time.sleep(0.5)
            after = counted_by_server(args.port + 1)
        overload = summarize(phase.records, args.duration)
        overload["client_details"] = [f"{CODES.get(code, code)}: {text} x{n}" for (code, text), n in
                                      sorted(phase.error_details.items(), key=lambda kv: -kv[1])[:8]]
        counted = {k: int(after.get(k, 0) - before.get(k, 0)) for k in after}
        rejected = overload["by_code"].get("RESOURCE_EXHAUSTED", {})
        return {
            "machine": f"{os.uname().nodename}, {os.cpu_count()} CPUs (shared with other engineers' work)",
            "bundle": str(bundle), "limiter": args.limiter, "concurrency_limit": limit,
            "capacity_ok_per_s": round(capacity, 1), "capacity_server_stages_ms_p50": stages, "offered_per_s": round(offered, 1),
            "duration_s": args.duration, "overload": overload,
            "useful_share_of_capacity": round(overload["ok_per_s"] / capacity, 3),
            "rejection_p99_ms": rejected.get("p99_ms"),
            "server_counted": counted, "server_counted_total": sum(counted.values()),
        }
    finally:
        if proxy is not None:
            proxy.stop()
        server.terminate()
        server.wait(timeout=30)


def _default_bundle() -> Path:
    from train.default_bundle import default_bundle_path

    return default_bundle_path()


def markdown(r: dict) -> str:
    o = r["overload"]
    lines = [f"limiter `{r['limiter']}` (bound {r['concurrency_limit']} calls), capacity {r['capacity_ok_per_s']}/s, "
             f"offered {r['offered_per_s']}/s open loop for {r['duration_s']:.0f} s",
             "", "| code | calls | p50 ms | p99 ms |", "|---|---:|---:|---:|"]
    for code, v in sorted(o["by_code"].items()):
        lines.append(f"| {code} | {v['count']} | {v['p50_ms']} | {v['p99_ms']} |")
    lines += ["", f"useful throughput {o['ok_per_s']}/s = {r['useful_share_of_capacity']:.0%} of capacity; "
              f"sent {o['sent']}, server counted {r['server_counted_total']} ({r['server_counted']}); "
              f"generator late p99 {o['generator_late_p99_ms']} ms; server stages of OK calls (p50 ms): "
              f"{o['ok_server_stages_ms_p50']}", "", "client-side details: "
              + "; ".join(o["client_details"])]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", help="bundle to serve (default: the default demo bundle)")
    parser.add_argument("--factor", type=float, default=3.0, help="offered load as a multiple of capacity")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--capacity", type=float, default=0.0, help="skip the capacity run: this many OK/s")
    parser.add_argument("--capacity-s", type=float, default=10.0)
    parser.add_argument("--limiter", choices=["door", "grpc", "proxy"], default="door")
    parser.add_argument("--limit", type=int, default=0, help="concurrency bound (0: derived from the batcher)")
    parser.add_argument("--port", type=int, default=29441)
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "overload"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"results-{args.limiter}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
