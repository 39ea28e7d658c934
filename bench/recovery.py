"""Backend recovery drill: kill the inference backend with a hung call, end the cause, time SERVING.

    python bench/recovery.py [--bundle DIR] [--trials 5] [--hold 3] [--out bench/out/recovery]

`recserve serve` runs with BatcherConfig.fault_file set (RECSERVE_BATCHER_FAULT_FILE) and a
--timeout s inference timeout (long enough for warm-up batches on a loaded machine). Each trial: create the fault file (inference hangs), send an Embed (it times
out, the backend is marked dead, health goes NOT_SERVING), hold the fault for --hold s, remove
the file, and poll grpc.health.v1 every 10 ms until SERVING; then check an Embed succeeds.
Bar: SERVING again within 5 s of the cause ending. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import threading
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from protos import recommender_pb2 as pb  # noqa: E402
from protos import recommender_pb2_grpc  # noqa: E402

SERVING = health_pb2.HealthCheckResponse.SERVING


def drain_output(process: subprocess.Popen) -> None:
    """Keep reading the server's output so it never blocks on a full pipe (its warnings)."""
    threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()


def health_status(health) -> int | None:
    try:
        return health.Check(health_pb2.HealthCheckRequest(service="recserve.v1.Recommender"), timeout=1).status
    except grpc.RpcError:
        return None


def trial(stub, health, fault: Path, hold_s: float) -> dict:
    fault.write_text("")
    try:
        stub.Embed(pb.EmbedRequest(texts=[f"drill {time.time()}"]), timeout=10)
        killed_code = "OK"
    except grpc.RpcError as err:
        killed_code = err.code().name
    while health_status(health) == SERVING:
        time.sleep(0.01)
    time.sleep(hold_s)
    down_at_end = health_status(health) != SERVING
    fault.unlink()
    ended = time.monotonic()
    while health_status(health) != SERVING:
        if time.monotonic() - ended > 30:
            return {"killed_code": killed_code, "down_while_held": down_at_end, "recovered_s": None}
        time.sleep(0.01)
    recovered_s = time.monotonic() - ended
    stub.Embed(pb.EmbedRequest(texts=["after the drill"]), timeout=10)
    return {"killed_code": killed_code, "down_while_held": down_at_end, "recovered_s": round(recovered_s, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", help="bundle to serve (default: the default demo bundle)")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--hold", type=float, default=3.0, help="seconds the fault lasts after the kill")
    parser.add_argument("--timeout", type=float, default=5.0, help="inference timeout (s) of the server")
    parser.add_argument("--port", type=int, default=29451)
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "recovery"))
    args = parser.parse_args()
    if args.bundle:
        bundle = Path(args.bundle)
    else:
        from train.default_bundle import default_bundle_path

        bundle = default_bundle_path()
    fault = Path(tempfile.mkdtemp()) / "fault"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RECSERVE_BATCHER_FAULT_FILE": str(fault),
           "RECSERVE_BATCHER_INFERENCE_TIMEOUT_S": str(args.timeout)}
    server = subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "serve", "--bundle", str(bundle), "--host", "127.0.0.1",
         "--port", str(args.port), "--metrics-port", "-1", "--read-only", "--log-level", "WARNING"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
    try:
        seen = []
        for line in server.stdout:
            seen.append(line)
            if "serving bundle" in line:
                break
        else:
            raise RuntimeError(f"server did not start (rc={server.wait()}):\n{''.join(seen[-10:])}")
        drain_output(server)
        with grpc.insecure_channel(f"127.0.0.1:{args.port}") as channel:
            stub = recommender_pb2_grpc.RecommenderStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            results = [trial(stub, health, fault, args.hold) for _ in range(args.trials)]
    finally:
        fault.unlink(missing_ok=True)
        server.terminate()
        server.wait(timeout=30)
    times = [r["recovered_s"] for r in results if r["recovered_s"] is not None]
    summary = {"machine": f"{os.uname().nodename}, {os.cpu_count()} CPUs (shared)", "bundle": str(bundle),
               "hold_s": args.hold, "trials": results,
               "recovered_median_s": statistics.median(times) if times else None,
               "recovered_max_s": max(times) if times else None,
               "all_recovered_within_5s": len(times) == len(results) and max(times) < 5}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("| trial | kill answered | NOT_SERVING while held | SERVING again after (s) |\n|---:|---|---|---:|")
    for i, r in enumerate(results, 1):
        print(f"| {i} | {r['killed_code']} | {r['down_while_held']} | {r['recovered_s']} |")
    print(f"\nmedian {summary['recovered_median_s']} s, max {summary['recovered_max_s']} s after the cause ended")
    return 0 if summary["all_recovered_within_5s"] else 1


if __name__ == "__main__":
    sys.exit(main())
