"""HNSW index and catalog-import benchmarks.

    python bench/index.py synthetic --n 100000            # clustered 384-dim vectors
    python bench/index.py synthetic --n 1000000
    python bench/index.py real --source ../shared/data/online-retail/online_retail.csv.gz
    python bench/index.py import --n 1000000              # streaming build, peak memory
    python bench/index.py plot                            # PNG from the saved results

Each run appends its results to docs/benchmarks/index-results.json (one run per
scenario, latest wins) so `plot` can draw every curve: recall@10 against queries/s for
ef 16..256, one thread and all threads. Run scenarios as separate processes: each one's
peak RSS is reported. Timings are medians of --repeat runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from export.cpus import usable_cpus  # noqa: E402
from export.hnsw_index import build_index, exact_kth_scores, recall_at_k, save_index  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "index-results.json"
PLOT = RESULTS.with_name("index-recall-qps.png")
EF_SWEEP = (16, 24, 32, 48, 64, 96, 128, 192, 256)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "usable_cpus": usable_cpus(), "python": platform.python_version()}


def clustered_vectors(n: int, dim: int, seed: int, centres: np.ndarray) -> np.ndarray:
    """Unit vectors scattered around `centres` with per-cluster spread, made in chunks so
    memory stays ~n*dim*4 bytes (no float64 copy of the whole set)."""
    rng = np.random.default_rng(seed)
    spread = np.random.default_rng(12345).uniform(0.6, 1.4, len(centres)).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 65536):
        size = min(65536, n - start)
        which = rng.integers(0, len(centres), size)
        noise = rng.standard_normal((size, dim), dtype=np.float32) / np.float32(np.sqrt(dim))
        block = centres[which] + spread[which, None] * noise
        out[start:start + size] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def sweep(index, vectors: np.ndarray, queries: np.ndarray, repeat: int, own=None) -> list[dict]:
    """recall@10 and queries/s for each ef, with 1 thread and all usable threads."""
    kth = exact_kth_scores(vectors, queries, 10, exclude=own)
    rows = []
    for ef in EF_SWEEP:
        index.set_ef(ef)
        for threads in sorted({1, usable_cpus()}):
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                labels, distances = index.knn_query(queries, k=10 + (own is not None),
                                                    num_threads=threads)
                times.append(time.perf_counter() - started)
            if own is not None:  # the query's own item does not count (as in choose_ef)
                keep = labels != own[:, None]
                keep[keep.sum(axis=1) > 10, -1] = False
                distances = distances[keep].reshape(len(queries), 10)
            rows.append({"ef": ef, "threads": threads, "recall_at_10": recall_at_k(distances, kth),
                         "qps": len(queries) / statistics.median(times)})
            print(f"  ef={ef:4d} threads={threads} recall@10={rows[-1]['recall_at_10']:.4f} "
                  f"qps={rows[-1]['qps']:,.0f}", flush=True)
    return rows


def index_figures(vectors: np.ndarray, m: int, ef_construction: int) -> tuple[object, dict]:
    started = time.perf_counter()
    index = build_index(vectors, np.arange(len(vectors)), m=m, ef_construction=ef_construction)
    build_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        save_index(index, Path(tmp) / "index.hnsw")
        size = (Path(tmp) / "index.hnsw").stat().st_size
    figures = {"n": len(vectors), "dim": vectors.shape[1], "m": m,
               "ef_construction": ef_construction, "build_seconds": round(build_seconds, 2),
               "build_threads": usable_cpus(), "index_bytes": size,
               "bytes_per_item": round(size / len(vectors), 1)}
    print(f"  built {len(vectors):,} x {vectors.shape[1]} in {build_seconds:.1f}s, "
          f"{size / len(vectors):,.0f} bytes/item", flush=True)
    return index, figures


def run_synthetic(args) -> dict:
    centres_rng = np.random.default_rng(7)
    n_clusters = max(10, args.n // 1000)
    centres = centres_rng.standard_normal((n_clusters, args.dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = clustered_vectors(args.n, args.dim, seed=1, centres=centres)
    queries = clustered_vectors(args.queries, args.dim, seed=2, centres=centres)  # unseen
    index, figures = index_figures(vectors, args.m, args.ef_construction)
    figures["clusters"] = n_clusters
    figures["queries"] = "held-out vectors from the same clusters"
    figures["sweep"] = sweep(index, vectors, queries, args.repeat)
    return figures


def _minilm_encoder(cache: Path) -> Path:
    """all-MiniLM-L6-v2 exported to fp32 ONNX once (cached)."""
    if not (cache / "model.onnx").is_file():
        from export.onnx_export import default_model_path, export_fp32

        cache.mkdir(parents=True, exist_ok=True)
        export_fp32(default_model_path(), cache)
    return cache


def run_real(args) -> dict:
    from export.embedding import embed_texts
    from export.item_text import item_text
    from export.online_retail import derive
    from export.runtime import EncoderRuntime
    from export.tokenization import TextTokenizer

    encoder = Path(args.encoder) if args.encoder else _minilm_encoder(Path(args.cache))
    items = derive(args.source).items
    texts = [item_text(it["title"], "", {"price": it["price"], "price_band": it["price_band"]})
             for it in items]
    runtime = EncoderRuntime(encoder / "model.onnx")
    started = time.perf_counter()
    vectors = embed_texts(runtime, TextTokenizer(encoder / "tokenizer", 128), texts)
    embed_seconds = time.perf_counter() - started
    print(f"  embedded {len(texts):,} items in {embed_seconds:.1f}s", flush=True)
    index, figures = index_figures(vectors, args.m, args.ef_construction)
    picked = np.random.default_rng(0).choice(len(vectors), min(1000, len(vectors)), replace=False)
    figures["queries"] = "1000 catalog items, own item not counted"
    figures["encoder"] = str(encoder)
    figures["embed_items_per_second"] = round(len(texts) / embed_seconds, 1)
    figures["sweep"] = sweep(index, vectors, vectors[picked], args.repeat, own=picked)
    return figures


def write_synthetic_catalog(root: Path, n: int, events: int, seed: int = 0) -> tuple[Path, Path]:
    """A gzip'd CSV catalog of n items (titles of 3-5 pseudo-words from a 5,000-word
    vocabulary, a text, category/brand/price attributes) and Zipf-popular events."""
    import csv
    import gzip

    rng = np.random.default_rng(seed)
    syllables = ["ka", "lo", "mi", "ten", "ra", "vo", "su", "pel", "dar", "qui", "zo", "ne",
                 "bri", "fa", "gol", "tu"]
    words = np.array(["".join(rng.choice(syllables, rng.integers(2, 4))) for _ in range(5000)])
    catalog, interactions = root / "catalog.csv.gz", root / "interactions.csv.gz"
    with gzip.open(catalog, "wt", newline="", compresslevel=1) as fh:
        writer = csv.writer(fh)
        writer.writerow(["item_id", "title", "text", "category", "brand", "price"])
        for start in range(0, n, 100_000):
            size = min(100_000, n - start)
            picks = rng.integers(0, len(words), (size, 6))
            lengths = rng.integers(3, 6, size)
            cats, brands = rng.integers(0, 200, size), rng.integers(0, 2000, size)
            prices = rng.uniform(1, 100, size)
            writer.writerows(
                [f"sku{start + i}", " ".join(words[picks[i, :lengths[i]]]),
                 f"made of {words[picks[i, 5]]}",
                 f"cat{cats[i]}", f"brand{brands[i]}", f"{prices[i]:.2f}"] for i in range(size))
    with gzip.open(interactions, "wt", newline="", compresslevel=1) as fh:
        writer = csv.writer(fh)
        writer.writerow(["user_id", "item_id", "timestamp"])
        for start in range(0, events, 100_000):
            size = min(100_000, events - start)
            users = rng.integers(0, max(1, events // 20), size)
            items = (rng.zipf(1.3, size) - 1) % n
            stamps = 1_300_000_000 + rng.integers(0, 86400 * 365, size)
            writer.writerows([f"u{u}", f"sku{i}", int(t)] for u, i, t in zip(users, items, stamps))
    return catalog, interactions


def _tiny_encoder(root: Path) -> Path:
    """A random 2-layer, hidden-32 BERT (MiniLM's tokenizer) exported to ONNX: the whole
    build pipeline at 1M items without hours of MiniLM inference on 2 cores."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from export.onnx_export import default_model_path, export_fp32

    torch.manual_seed(0)
    tokenizer = BertTokenizerFast.from_pretrained(str(default_model_path()))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(root / "hf")
    tokenizer.save_pretrained(root / "hf")
    model = SentenceTransformer(modules=[models.Transformer(str(root / "hf"), max_seq_length=128),
                                         models.Pooling(32, pooling_mode="mean"),
                                         models.Normalize()], device="cpu")
    model.save(str(root / "st"))
    (root / "onnx").mkdir()
    export_fp32(root / "st", root / "onnx")
    return root / "onnx"


def run_import(args) -> dict:
    """Stream a synthetic n-item catalog (+ events) through build_bundle in a child process,
    so its peak RSS is the build's alone (not this process's torch export of the encoder)."""
    import subprocess

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        catalog, interactions = write_synthetic_catalog(root, args.n, args.events)
        print(f"  wrote synthetic files in {time.perf_counter() - started:.0f}s "
              f"({catalog.stat().st_size / 1e6:.0f} MB + {interactions.stat().st_size / 1e6:.0f} MB)",
              flush=True)
        encoder = Path(args.encoder) if args.encoder else _tiny_encoder(root / "encoder")
        command = [sys.executable, __file__, "import-child", str(encoder), str(catalog),
                   str(interactions), str(root / "bundle")]
        child = subprocess.run(command, capture_output=True, text=True, check=False)
        sys.stderr.write(child.stderr[-3000:])
        if child.returncode != 0:
            raise SystemExit(f"import child failed: {child.returncode}")
        figures = json.loads(child.stdout.strip().splitlines()[-1])
        bundle = root / "bundle"
        figures["bundle_bytes"] = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
        figures["items_db_bytes_per_item"] = round(
            (bundle / "items.sqlite").stat().st_size / figures["items"], 1)
        figures["catalog_file_mb"] = round(catalog.stat().st_size / 1e6, 1)
        figures["encoder"] = "given" if args.encoder else "random 2-layer hidden-32 BERT (ONNX fp32)"
    return figures


def import_child(argv: list[str]) -> None:
    from export.build import build_bundle

    encoder, catalog, interactions, out = argv
    baseline = peak_rss_mb()
    started = time.perf_counter()
    manifest = build_bundle(encoder, catalog, interactions, out, progress=True)
    print(json.dumps({
        "items": manifest["items"]["count"],
        "events": manifest["features"]["counts"]["interactions"],
        "dim": manifest["index"]["dim"],
        "seconds": round(time.perf_counter() - started, 1),
        "embed_items_per_second": manifest["embedding"]["items_per_second"],
        "index_build_seconds": manifest["index"]["build_seconds"],
        "ef": manifest["index"]["ef"], "recall_at_10": manifest["index"]["recall_at_10"],
        "features_seconds": manifest["features"]["seconds"],
        "rss_after_imports_mb": round(baseline, 0),
        "peak_rss_mb": round(peak_rss_mb(), 0),
    }))


def plot(results: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    for name, run in results.items():
        if "sweep" not in run:
            continue
        for threads in sorted({row["threads"] for row in run["sweep"]}):
            rows = [r for r in run["sweep"] if r["threads"] == threads]
            label = f"{name} (n={run['n']:,}, {threads} thread{'s' if threads > 1 else ''})"
            ax.plot([r["recall_at_10"] for r in rows], [r["qps"] for r in rows],
                    marker="o", linestyle="-" if threads == 1 else "--", label=label)
            for r in rows[:: max(1, len(rows) // 4)] if threads == 1 else ():
                ax.annotate(f"ef {r['ef']}", (r["recall_at_10"], r["qps"]), fontsize=7,
                            textcoords="offset points", xytext=(3, 3))
    ax.set_yscale("log")
    ax.set_xlabel("recall@10 vs exact search")
    ax.set_ylabel("queries / s (batch of queries, log scale)")
    ax.set_title("HNSW (hnswlib, M=16, ef_construction=200): recall vs throughput, ef 16..256")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=120)
    return PLOT


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "import-child":
        import_child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("scenario", choices=("synthetic", "real", "import", "plot"))
    parser.add_argument("--n", type=int, default=100_000, help="items (synthetic, import)")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--events", type=int, default=2_000_000, help="interactions (import)")
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--source", default="../shared/data/online-retail/online_retail.csv.gz")
    parser.add_argument("--encoder", default=None, help="ONNX encoder folder (real, import)")
    parser.add_argument("--cache", default=os.path.expanduser("~/.cache/recserve/bench-minilm-fp32"))
    parser.add_argument("--workdir", default=None, help="where import writes its temp files")
    parser.add_argument("--name", default=None, help="result key (default: scenario and n)")
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    if args.scenario == "plot":
        print(plot(results))
        return
    name = args.name or {"synthetic": f"synthetic-{args.n // 1000}k", "real": "online-retail",
                         "import": f"import-{args.n // 1000}k"}[args.scenario]
    print(f"{name}: {' '.join(sys.argv)}", flush=True)
    started = time.perf_counter()
    figures = {"synthetic": run_synthetic, "real": run_real, "import": run_import}[args.scenario](args)
    figures.update(command="python " + " ".join(sys.argv), machine=machine(),
                   wall_seconds=round(time.perf_counter() - started, 1),
                   date=time.strftime("%Y-%m-%d"))
    if args.scenario != "import":
        figures["peak_rss_mb"] = round(peak_rss_mb(), 0)
    results[name] = figures
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps({k: v for k, v in figures.items() if k != "sweep"}, indent=1))
    if any("sweep" in run for run in results.values()):
        print(plot(results))


if __name__ == "__main__":
    main()
