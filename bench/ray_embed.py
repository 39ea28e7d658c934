"""Ray Data embedding throughput (`recserve build --engine ray`) against the local embedder.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/ray_embed.py \
        --encoder ~/.cache/recserve/default-minilm-int8-demo-v1.encoder --items 6500 --workers 1,2

Item texts are the demo catalog's (the build's item template), repeated to --items. For each
worker count a fresh local Ray (num_cpus = workers) embeds them with one-thread ONNX Runtime
actors; `local 1 thread` is export.embedding.embed_texts in this process. Timed end to end
with actor start-up included (what a build pays); the machine is shared, so repeat runs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def demo_texts(n: int) -> list[str]:
    from export.catalog import read_catalog
    from export.demo import demo_catalog_path
    from export.item_text import item_text

    texts = [item_text(r.title, r.text, r.attributes) for r in read_catalog(demo_catalog_path())]
    return (texts * (n // len(texts) + 1))[:n]


def local_rate(encoder: Path, texts: list[str], max_length: int) -> float:
    from export.embedding import embed_texts
    from export.runtime import EncoderRuntime, RuntimeConfig
    from export.tokenization import TextTokenizer

    runtime = EncoderRuntime(encoder / "model.onnx", RuntimeConfig(intra_op_threads=1))
    tokenizer = TextTokenizer(encoder / "tokenizer", max_length)
    embed_texts(runtime, tokenizer, texts[:64])  # warm
    started = time.perf_counter()
    embed_texts(runtime, tokenizer, texts)
    return len(texts) / (time.perf_counter() - started)


def ray_rate(encoder: Path, texts: list[str], max_length: int, workers: int) -> dict[str, float]:
    import ray

    from export.ray_embedding import embed_with_ray

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        started = time.perf_counter()
        embed_with_ray(encoder / "model.onnx", encoder / "tokenizer", max_length, texts,
                       workers=workers, batch_size=256)
        total = time.perf_counter() - started
    finally:
        ray.shutdown()
    return {"items_per_s": len(texts) / total, "seconds": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", type=Path, required=True)
    parser.add_argument("--items", type=int, default=6500)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    texts = demo_texts(args.items)
    results = {"items": len(texts), "local_1_thread_items_per_s": local_rate(args.encoder, texts, args.max_length)}
    for workers in (int(w) for w in args.workers.split(",")):
        results[f"ray_{workers}_workers"] = ray_rate(args.encoder, texts, args.max_length, workers)
    print(json.dumps(results, indent=2, default=lambda x: round(float(x), 1)))
    per_actor = results["ray_1_workers"]["items_per_s"] if "ray_1_workers" in results else None
    if per_actor:
        print(f"projection: 100M items / {per_actor:,.0f} items/s per 1-thread actor = "
              f"{1e8 / per_actor / 3600:,.1f} actor-hours")


if __name__ == "__main__":
    main()
