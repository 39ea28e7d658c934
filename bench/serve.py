"""End-to-end Recommend throughput against the raw encoder limit, in one run.

    python bench/serve.py [--bundle DIR] [--duration 10] [--out bench/out/serve]

1. The limit: the bundle's raw ONNX encoder, one intra-op thread, pinned to core 0, over
   pre-tokenised batches of the same product-name queries, at each batch size; the best
   sentences/s is the limit.
2. Pinned: `recserve serve` pinned to core 0 (one ORT thread), `recserve loadtest` pinned to
   core 1 (separate processes), text queries, k=10, reranking on, query cache off (every
   query is encoded: a cache hit would beat the encoder limit and prove nothing). Closed
   loop at rising concurrency finds the maximum throughput; an open-loop run at 70% of it
   gives p50/p99 under load.
3. Unpinned: the same on both cores, ORT threads = usable CPUs, with `--workers N` serving
   processes on the port (`--workers 2`: the issue-13 comparison with the pinned single process).
4. `--rss-workers 1,2,4`: resident memory of each serving process with that many workers.
5. `--freshness N`: with `--workers` processes under a read load, N upserts one after another;
   for each, the time from the acknowledgement until every worker returns the item (polled
   on one connection per worker, no min_sequence): p50/p99/max.
Writes results.json and prints a Markdown table for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def workload_texts(limit: int = 2000) -> list[str]:
    from clients.loadtest.workload import default_workload

    texts = [r.query for r in default_workload().requests if r.query and not r.user_id and not r.history]
    return texts[:limit]


def encoder_limit(bundle: Path, texts: list[str], batch_sizes=(1, 8, 16, 32, 64, 128)) -> dict:
    """Run in a child pinned to core 0: sentences/s of the raw encoder per batch size."""
    code = f"""
import json, os, sys, time
sys.path.insert(0, {str(REPO)!r})
os.sched_setaffinity(0, {{0}})
from export.runtime import EncoderRuntime, RuntimeConfig
from export.tokenization import TextTokenizer, pad_batch, plan_batches
from server.served_bundle import encoder_max_length
from export.bundle import read_manifest
bundle = {str(bundle)!r}
texts = json.loads(sys.stdin.read())
runtime = EncoderRuntime(bundle + "/model.onnx", RuntimeConfig(provider="cpu", intra_op_threads=1))
tokenizer = TextTokenizer(bundle + "/tokenizer", encoder_max_length(read_manifest(bundle, verify=False)))
ids = tokenizer.encode(texts)
out = {{}}
for size in {list(batch_sizes)!r}:
    batches = [(
        pad_batch([ids[p] for p in pos], seq, tokenizer.pad_id))
        for pos, seq in plan_batches([len(i) for i in ids], 1 << 30, size)]
    for feeds in batches[:3]:
        runtime.run(feeds)
    rates = []
    for _ in range(3):
        start = time.perf_counter(); done = 0
        for feeds in batches:
            runtime.run(feeds); done += len(feeds["input_ids"])
        rates.append(done / (time.perf_counter() - start))
    out[size] = sorted(rates)[1]
print(json.dumps(out))
"""
    result = subprocess.run([sys.executable, "-c", code], input=json.dumps(texts), capture_output=True,
                            text=True, check=True)
    per_size = {int(k): v for k, v in json.loads(result.stdout.strip().splitlines()[-1]).items()}
    best = max(per_size, key=per_size.get)
    return {"sentences_per_s_by_batch": per_size, "best_batch": best, "limit": per_size[best]}


def start_server(bundle: Path, port: int, pinned: bool, workers: int = 1,
                 inference: str = "local") -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RECSERVE_BATCHER_CACHE_SIZE": "0"}
    cmd = [sys.executable, "-m", "clients.cli", "serve", "--bundle", str(bundle), "--host", "127.0.0.1",
           "--port", str(port), "--metrics-port", "-1", "--log-level", "WARNING", "--workers", str(workers),
           "--inference", inference if workers > 1 else "local"]
    if pinned:
        cmd = ["taskset", "-c", "0", *cmd, "--threads", "1"]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    for line in process.stdout:
        if re.search(r"^recserve: serving bundle", line):  # workers print `recserve worker i: ...`
            return process
    raise RuntimeError(f"server did not start (rc={process.wait()})")


def loadtest(target: str, out: Path, pinned: bool, duration: float, *, concurrency: int | None = None,
             rate: float | None = None, load_workers: int = 1) -> dict:
    mode = ["--concurrency", str(concurrency)] if concurrency else ["--rate", f"{rate:.1f}"]
    cmd = [sys.executable, "-m", "clients.cli", "loadtest", "--target", target, *mode,
           "--duration", str(duration), "--warmup", "2", "--mix", "text=1", "--workers", str(load_workers),
           "--no-progress", "--out", str(out), "--deadline-ms", "5000"]
    if pinned:
        cmd = ["taskset", "-c", "1", *cmd]
    subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    report = json.loads((out / "report.json").read_text())
    return report["phases"][-1] if "phases" in report else report


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def serving_pids(process: subprocess.Popen) -> list[int]:
    """The worker processes of a supervisor (and its inference process), or the server itself."""
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    return [int(c) for c in children] or [process.pid]


def memory_mb(pid: int) -> dict:
    """Rss, Pss (shared pages split between their users) and Private (this process alone), MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0]) / 1024
    return {"rss": round(fields["Rss"], 1), "pss": round(fields["Pss"], 1),
            "private": round(fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0), 1)}


def process_name(pid: int) -> str:
    return "inference" if b"server.inference" in Path(f"/proc/{pid}/cmdline").read_bytes() else "worker"


def measure_rss(bundle: Path, port: int, workers: int, inference: str = "local") -> dict:
    server = start_server(bundle, port, False, workers, inference)
    try:
        time.sleep(1.0)
        children = {pid: (process_name(pid), memory_mb(pid)) for pid in serving_pids(server)}
        per_worker = [m for name, m in children.values() if name == "worker"]
        shared = [m for name, m in children.values() if name == "inference"]
        supervisor = memory_mb(server.pid) if workers > 1 else {"rss": 0.0, "pss": 0.0, "private": 0.0}
        total = sum(m["pss"] for _, m in children.values()) + supervisor["pss"]
        return {"workers": workers, "inference": inference if workers > 1 else "local",
                "per_worker_mb": per_worker, "inference_process_mb": shared[0] if shared else None,
                "supervisor_mb": supervisor, "total_pss_mb": round(total, 1)}
    finally:
        server.terminate()
        server.wait(timeout=60)


def measure_server(bundle: Path, out: Path, pinned: bool, duration: float, port: int, workers: int = 1,
                   concurrencies=(16, 32, 64, 128), load_workers: int = 1, inference: str = "local") -> dict:
    """load_workers: generator processes = connections. SO_REUSEPORT spreads connections, not
    calls, over server workers: one connection would load one worker only."""
    label = "pinned" if pinned else f"unpinned-w{workers}"
    server = start_server(bundle, port, pinned, workers, inference)
    target = f"127.0.0.1:{port}"
    try:
        closed = {}
        pids = serving_pids(server)
        for concurrency in concurrencies:
            cpu_before = cpu_seconds(pids)
            phase = loadtest(target, out / f"{label}-c{concurrency}", pinned, duration, concurrency=concurrency,
                             load_workers=load_workers)
            # server CPU per answered call (the 2 s warm-up counted pro rata): the cost model
            served = phase["ok"] * (duration + 2.0) / duration
            cpu_ms = 1000 * (cpu_seconds(pids) - cpu_before) / max(served, 1)
            closed[concurrency] = {"throughput": phase["throughput_ok"], "p50_ms": phase["latency_ms"]["p50"],
                                   "p99_ms": phase["latency_ms"]["p99"], "errors": phase["errors"],
                                   "server_cpu_ms_per_call": round(cpu_ms, 3)}
        best = max(closed, key=lambda c: closed[c]["throughput"])
        max_rps = closed[best]["throughput"]
        phase = loadtest(target, out / f"{label}-open70", pinned, duration, rate=0.7 * max_rps,
                         load_workers=load_workers)
        open70 = {"offered": round(0.7 * max_rps, 1), "throughput": phase["throughput_ok"],
                  "p50_ms": phase["latency_ms"]["p50"], "p99_ms": phase["latency_ms"]["p99"],
                  "errors": phase["errors"], "generator_kept_up": phase.get("generator_kept_up"),
                  "server_timings_ms": phase.get("server_timings_ms")}
        rss = [round(rss_mb(pid), 1) for pid in serving_pids(server)]
        return {"closed_loop": closed, "max_throughput": max_rps, "best_concurrency": best, "open_70": open70,
                "workers": workers, "inference": inference if workers > 1 else "local", "rss_mb_per_process": rss}
    finally:
        server.terminate()
        server.wait(timeout=30)


def _stubs_per_worker(target: str, workers: int):
    """One channel (one connection) per worker, found by the worker id in the timings."""
    import grpc

    from protos import recommender_pb2 as pb
    from protos import recommender_pb2_grpc as pb_grpc

    stubs, spare = {}, []
    for _ in range(50 * workers):
        channel = grpc.insecure_channel(target)
        stub = pb_grpc.RecommenderStub(channel)
        worker = stub.Recommend(pb.RecommendRequest(query="mug", k=1), timeout=10).timings.worker_id
        if worker in stubs:
            spare.append(channel)
        else:
            stubs[worker] = stub
        if len(stubs) == workers:
            break
    for channel in spare:
        channel.close()
    return stubs


def measure_freshness(bundle: Path, out: Path, port: int, workers: int, writes: int, read_rate: float) -> dict:
    import grpc

    from protos import recommender_pb2 as pb
    from protos import recommender_pb2_grpc as pb_grpc

    server = start_server(bundle, port, False, workers)
    target = f"127.0.0.1:{port}"
    load = subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "loadtest", "--target", target, "--rate", str(read_rate),
         "--duration", "600", "--warmup", "0", "--mix", "text=1", "--workers", "1", "--no-progress",
         "--out", str(out / "freshness-load"), "--deadline-ms", "5000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        stubs = _stubs_per_worker(target, workers)
        writer = pb_grpc.RecommenderStub(grpc.insecure_channel(target))
        time.sleep(2.0)  # the read load is running
        lags, own = [], []
        run = int(time.time())
        for i in range(writes):
            tag = f"fresh-{run}-{i}"
            answer = writer.UpsertItems(pb.UpsertItemsRequest(items=[pb.Item(
                item_id=tag, title=f"FRESHNESS PROBE {i}", attributes={"fresh": tag})]), timeout=10)
            acked = time.perf_counter()
            seen = {}
            while len(seen) < len(stubs) and time.perf_counter() - acked < 10:
                for worker, stub in stubs.items():
                    if worker in seen:
                        continue
                    response = stub.Recommend(pb.RecommendRequest(
                        query=f"freshness probe {i}", k=1, filter=pb.Filter(attribute_equals={"fresh": tag})),
                        timeout=10)
                    if response.items:
                        seen[worker] = time.perf_counter() - acked
            lags.append(max(seen.values()) if len(seen) == len(stubs) else float("inf"))
            own.append(min(seen.values()) if seen else float("inf"))
            del answer
        ms = np.asarray(lags) * 1000
        return {"workers": workers, "writes": writes, "read_rate": read_rate,
                "every_worker_ms": {"p50": round(float(np.percentile(ms, 50)), 2),
                                    "p99": round(float(np.percentile(ms, 99)), 2), "max": round(float(ms.max()), 2)},
                "first_worker_ms": {"p50": round(float(np.percentile(np.asarray(own) * 1000, 50)), 2)}}
    finally:
        load.terminate()
        load.wait(timeout=30)
        server.terminate()
        server.wait(timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", help="bundle to serve (default: the default demo bundle)")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "serve"))
    parser.add_argument("--port", type=int, default=50391)
    parser.add_argument("--skip-unpinned", action="store_true")
    parser.add_argument("--workers", type=int, default=1, help="serving processes of the unpinned run")
    parser.add_argument("--load-workers", type=int, default=0,
                        help="generator processes (connections) of the unpinned run (0: 2 x --workers)")
    parser.add_argument("--concurrency", default="16,32,64,128", help="closed-loop concurrencies")
    parser.add_argument("--rss-workers", default="", help="e.g. 1,2,4: RSS per worker, nothing else")
    parser.add_argument("--inference", choices=["local", "shared"], default="local",
                        help="--workers > 1: a session per worker, or one shared inference process")
    parser.add_argument("--freshness", type=int, default=0, help="N upserts: ack -> visible on every worker")
    parser.add_argument("--read-rate", type=float, default=100.0, help="read load (Recommend/s) during --freshness")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.bundle:
        bundle = Path(args.bundle)
    else:
        from train.default_bundle import default_bundle_path

        bundle = default_bundle_path()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.rss_workers:
        rss = [measure_rss(bundle, args.port, int(n), args.inference) for n in args.rss_workers.split(",")]
        (out / "rss.json").write_text(json.dumps(rss, indent=2) + "\n")
        print(json.dumps(rss, indent=1))
        return 0
    if args.freshness:
        fresh = measure_freshness(bundle, out, args.port, args.workers, args.freshness, args.read_rate)
        (out / "freshness.json").write_text(json.dumps(fresh, indent=2) + "\n")
        print(json.dumps(fresh, indent=1))
        return 0
    concurrencies = tuple(int(c) for c in args.concurrency.split(","))
    texts = workload_texts()
    results = {"bundle": str(bundle), "texts": len(texts), "machine": os.uname().nodename,
               "cpus": len(os.sched_getaffinity(0)), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    results["limit"] = encoder_limit(bundle, texts)
    results["pinned"] = measure_server(bundle, out, True, args.duration, args.port, 1, concurrencies)
    if not args.skip_unpinned:
        results["unpinned"] = measure_server(bundle, out, False, args.duration, args.port + 1, args.workers,
                                             concurrencies, args.load_workers or 2 * args.workers, args.inference)
    pinned = results["pinned"]
    results["ratio_to_limit"] = round(pinned["max_throughput"] / results["limit"]["limit"], 3)
    o = pinned["open_70"]
    results["p99_over_p50_at_70pct"] = round(o["p99_ms"] / o["p50_ms"], 2) if o["p50_ms"] else None
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    return 0


def markdown(r: dict) -> str:
    lim = r["limit"]
    lines = ["| batch | raw int8 encoder, 1 thread, core 0 (sentences/s) |", "|---:|---:|"]
    lines += [f"| {b} | {v:.0f} |" for b, v in sorted(lim["sentences_per_s_by_batch"].items())]
    lines += ["", "| setup | concurrency | Recommend/s | p50 ms | p99 ms | errors | server CPU ms/call |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for label in ("pinned", "unpinned"):
        if label not in r:
            continue
        for c, v in r[label]["closed_loop"].items():
            lines.append(f"| {label} (w{r[label].get('workers', 1)}), closed loop | {c} | {v['throughput']:.0f} | "
                         f"{v['p50_ms']} | {v['p99_ms']} | {v['errors']} | {v.get('server_cpu_ms_per_call', '')} |")
        o = r[label]["open_70"]
        lines.append(f"| {label}, open loop at 70% ({o['offered']}/s) | - | {o['throughput']:.0f} | {o['p50_ms']} | "
                     f"{o['p99_ms']} | {o['errors']} | |")
    lines += ["", f"limit (best batch {lim['best_batch']}): {lim['limit']:.0f} sentences/s; "
              f"pinned max Recommend/s / limit = {r['ratio_to_limit']}; "
              f"p99/p50 at 70% load = {r['p99_over_p50_at_70pct']}"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
