"""ONNX Runtime's CPU memory arena on or off: encoder speed and resident memory, side by side.

    python bench/ort_arena.py --bundle ~/.cache/recserve/default-minilm-int8-demo-v2

Each round starts one child per setting, in turn (on, off, on, off, ...), pinned to core 0
with one intra-op thread, as a pinned `recserve serve` runs its encoder: it runs the
server's warm-up batches (every length bucket, as large as the default token budget lets in),
notes its RSS, then encodes the load generator's query texts batched as the server batches
them, and times the largest warm-up batch (the worst case a call can cause). Medians over rounds; the RSS is what each serving worker would keep.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.serve import workload_texts  # noqa: E402

CHILD = """
import json, os, sys, time
sys.path.insert(0, {repo!r})
os.sched_setaffinity(0, {{0}})
import numpy as np
from export.bundle import read_manifest
from export.runtime import EncoderRuntime, RuntimeConfig
from export.tokenization import TextTokenizer, pad_batch, plan_batches
from server.batching.batcher import BatcherConfig
from server.served_bundle import encoder_max_length
from server.serving_state import warmup_texts

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

bundle = {bundle!r}
texts = json.loads(sys.stdin.read())
before = rss_mb()
runtime = EncoderRuntime(bundle + "/model.onnx",
                         RuntimeConfig(provider="cpu", intra_op_threads=1, cpu_mem_arena={arena}))
tokenizer = TextTokenizer(bundle + "/tokenizer", encoder_max_length(read_manifest(bundle, verify=False)))
config = BatcherConfig()
def padded(batch_texts):
    ids = tokenizer.encode(batch_texts)
    return [pad_batch([ids[p] for p in pos], seq, tokenizer.pad_id)
            for pos, seq in plan_batches([len(i) for i in ids], config.max_batch_tokens, config.max_batch_size)]
warm = [feeds for batch in warmup_texts(tokenizer.max_length, config.buckets, config.max_batch_tokens,
                                        config.max_batch_size) for feeds in padded(batch)]
for feeds in warm:
    runtime.run(feeds)
warm_rss = rss_mb()
batches = padded(texts)
start = time.perf_counter(); done = 0
for feeds in batches:
    runtime.run(feeds); done += len(feeds["input_ids"])
queries = done / (time.perf_counter() - start)
feeds = max(warm, key=lambda f: f["input_ids"].size)  # the largest batch the budget lets in
times = []
for _ in range(5):
    t = time.perf_counter(); runtime.run(feeds); times.append(time.perf_counter() - t)
print(json.dumps({{"queries_per_s": queries, "worst_batch_ms": 1000 * sorted(times)[2],
                  "rss_after_load_mb": before, "rss_after_warmup_mb": warm_rss, "rss_end_mb": rss_mb()}}))
"""


def run_child(bundle: Path, arena: bool, texts: list[str]) -> dict:
    code = CHILD.format(repo=str(REPO), bundle=str(bundle), arena=arena)
    result = subprocess.run([sys.executable, "-c", code], input=json.dumps(texts), capture_output=True,
                            text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--texts", type=int, default=2000)
    args = parser.parse_args()
    texts = workload_texts(args.texts)
    runs: dict[str, list[dict]] = {"arena on": [], "arena off": []}
    for _ in range(args.rounds):
        for label, arena in (("arena on", True), ("arena off", False)):
            runs[label].append(run_child(args.bundle, arena, texts))
    summary = {label: {key: round(statistics.median(r[key] for r in rows), 2) for key in rows[0]}
               for label, rows in runs.items()}
    on, off = summary["arena on"], summary["arena off"]
    summary["off / on: queries per s"] = round(off["queries_per_s"] / on["queries_per_s"], 3)
    summary["off - on: rss_end_mb"] = round(off["rss_end_mb"] - on["rss_end_mb"], 1)
    print(json.dumps({"rounds": args.rounds, "texts": len(texts), "summary": summary, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
