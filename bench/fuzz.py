"""Fuzz a real server over gRPC: random bytes, mutated and random messages to every method.

    python bench/fuzz.py [--bundle DIR] [--requests 12000] [--seed 1] [--out bench/out/fuzz]

Raw payloads go through a generic `channel.unary_unary` (no serializers: bytes on the wire),
so the server sees exactly what an attacker or a broken client can send: a third random
bytes, a third valid messages with flipped bits or cut short, a third random well-formed
messages (huge and odd strings, extreme k, NaN weights). Bar: every answer is OK,
INVALID_ARGUMENT, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, FAILED_PRECONDITION or NOT_FOUND,
and the server still serves afterwards. Prints the counts per code and per method.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import threading
import sys
import tempfile
from collections import Counter
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from protos import recommender_pb2 as pb  # noqa: E402

ALLOWED = {"OK", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "FAILED_PRECONDITION",
           "NOT_FOUND"}
METHODS = ["Recommend", "RecommendBatch", "Embed", "GetInfo", "UpsertItems", "DeleteItems", "RecordInteractions"]
ODD = ["", " ", "85123A", "lamp", "\u0000", "\U0001F600" * 50, "é" * 300, "x" * 5000, "\ud7ff", "a\nb\tc"]


def drain_output(process: subprocess.Popen) -> None:
    """Keep reading the server's output so it never blocks on a full pipe (its warnings)."""
    threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()


def text(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.3:
        return rng.choice(ODD)
    if roll < 0.35:
        return "y" * rng.randint(1000, 300_000)
    return "".join(chr(rng.randint(32, 0x2FFF)) for _ in range(rng.randint(0, 40)))


def texts(rng: random.Random, most: int = 6) -> list[str]:
    return [text(rng) for _ in range(rng.randint(0, most))]


def recommend(rng: random.Random) -> pb.RecommendRequest:
    return pb.RecommendRequest(
        query=text(rng), user_id=text(rng), history=texts(rng),
        k=rng.choice([0, 1, 10, 1000, 1001, -1, 2**31 - 1, -(2**31)]),
        diversity=rng.choice([0.0, 0.5, 1.0, -1.0, 7.0, float("nan"), float("inf")]), explain=rng.random() < 0.3,
        filter=pb.Filter(attribute_equals={text(rng): text(rng) for _ in range(rng.randint(0, 3))},
                         exclude_item_ids=texts(rng), exclude_interacted=rng.random() < 0.5),
        # a min_sequence past the log waits for the whole deadline (read-your-writes): rare here
        min_sequence=2**40 if rng.random() < 0.002 else rng.choice([0, 0, 1]))


def message(method: str, rng: random.Random):
    if method == "Recommend":
        return recommend(rng)
    if method == "RecommendBatch":
        return pb.RecommendBatchRequest(requests=[recommend(rng) for _ in range(rng.randint(0, 5))])
    if method == "Embed":
        return pb.EmbedRequest(texts=texts(rng))
    if method == "GetInfo":
        return pb.GetInfoRequest()
    if method == "UpsertItems":
        return pb.UpsertItemsRequest(request_id=text(rng), items=[
            pb.Item(item_id=text(rng), title=text(rng), text=text(rng),
                    attributes={text(rng): text(rng) for _ in range(rng.randint(0, 3))})
            for _ in range(rng.randint(0, 3))])
    if method == "DeleteItems":
        return pb.DeleteItemsRequest(item_ids=texts(rng), request_id=text(rng))
    return pb.RecordInteractionsRequest(request_id=text(rng), events=[
        pb.Interaction(user_id=text(rng), item_id=text(rng), event=rng.choice(["view", "purchase", text(rng)]),
                       weight=rng.choice([1.0, 0.0, -1.0, float("nan")]), timestamp_ms=rng.randint(-(2**62), 2**62))
        for _ in range(rng.randint(0, 4))])


def payload(method: str, rng: random.Random) -> tuple[str, bytes]:
    roll = rng.random()
    if roll < 1 / 3:
        return "random bytes", rng.randbytes(rng.randint(0, 600))
    raw = message(method, rng).SerializeToString()
    if roll < 2 / 3 and raw:
        data = bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        if rng.random() < 0.5:
            data = data[:rng.randrange(len(data))]
        return "mutated message", bytes(data)
    return "random message", raw


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", help="bundle to serve (default: the default demo bundle)")
    parser.add_argument("--requests", type=int, default=12000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--window", type=int, default=32, help="calls in flight at once")
    parser.add_argument("--deadline", type=float, default=5.0, help="deadline of each call (s)")
    parser.add_argument("--port", type=int, default=29431)
    parser.add_argument("--out", default=str(REPO / "bench" / "out" / "fuzz"))
    args = parser.parse_args()
    if args.bundle:
        bundle = Path(args.bundle)
    else:
        from train.default_bundle import default_bundle_path

        bundle = default_bundle_path()
    live = Path(tempfile.mkdtemp()) / "live"  # live writes on, in a scratch directory
    server = subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "serve", "--bundle", str(bundle), "--host", "127.0.0.1",
         "--port", str(args.port), "--metrics-port", "-1", "--live-dir", str(live), "--log-level", "WARNING"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
        cwd=REPO)
    for line in server.stdout:
        if "serving bundle" in line:
            break
    else:
        raise RuntimeError(f"server did not start (rc={server.wait()})")
    drain_output(server)
    rng = random.Random(args.seed)
    codes: Counter = Counter()
    by_kind: Counter = Counter()
    bad: list[str] = []
    try:
        with grpc.insecure_channel(f"127.0.0.1:{args.port}",
                                   options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
            calls = {m: channel.unary_unary(f"/recserve.v1.Recommender/{m}") for m in METHODS}
            window: list = []

            def settle(entry) -> None:
                method, kind, future = entry
                try:
                    future.result()
                    code = "OK"
                except grpc.RpcError as err:
                    code = err.code().name
                    if code not in ALLOWED and len(bad) < 20:
                        bad.append(f"{method} ({kind}): {code} {err.details()!r}")
                codes[code] += 1
                by_kind[(kind, code)] += 1

            for _ in range(args.requests):
                method = rng.choice(METHODS)
                kind, data = payload(method, rng)
                window.append((method, kind, calls[method].future(data, timeout=args.deadline)))
                if len(window) >= args.window:
                    settle(window.pop(0))
            for entry in window:
                settle(entry)
            serving = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status
        alive = server.poll() is None and serving == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.terminate()
        server.wait(timeout=30)
    result = {"requests": sum(codes.values()), "codes": dict(codes), "disallowed": bad,
              "by_kind": {f"{k} -> {c}": n for (k, c), n in sorted(by_kind.items())},
              "serving_afterwards": alive, "seed": args.seed, "bundle": str(bundle)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print("| code | calls |\n|---|---:|")
    for code, n in codes.most_common():
        print(f"| {code} | {n} |")
    print(f"\n{result['requests']} requests, serving afterwards: {alive}; disallowed: {bad or 'none'}")
    return 0 if alive and not bad and not set(codes) - ALLOWED else 1


if __name__ == "__main__":
    sys.exit(main())
