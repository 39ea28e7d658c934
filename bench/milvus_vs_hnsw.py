"""The two retrieval backends side by side on one bundle: top-10 agreement, latency, memory.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/milvus_vs_hnsw.py \
        --bundle ~/.cache/recserve/default-minilm-int8-demo-v2 --queries 300

Starts a Milvus Lite server (its own process), loads the bundle's vectors into a collection
exactly as `recserve build --retrieval milvus` does, and queries both backends with the
bundle's own item vectors (MiniLM): agreement of the top-10 (as sets, equal similarities
counting as equal at ties), recall against exact search, single-query latency unfiltered and
with an attribute filter + exclusions (the Retriever's path for each backend), and memory
per item of each part.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def start_milvus(data: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data),
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while "listening" not in proc.stdout.readline():
        if proc.poll() is not None:
            raise SystemExit("Milvus Lite did not start")
    return proc, f"http://127.0.0.1:{port}"


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.asarray(samples) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def timed(fn, queries: np.ndarray) -> list[float]:
    out = []
    for q in queries:
        t0 = time.perf_counter()
        fn(q)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()

    from export.bundle import INDEX_FILE, ITEMS_DB
    from export.hnsw_index import load_index
    from export.item_store import ItemStore
    from export.milvus_collection import connect, create_collection
    from server.retrieval.filters import AttributePostings, ItemFilter
    from server.retrieval.interests import Interest
    from server.retrieval.milvus_index import MilvusIndex
    from server.retrieval.retriever import RetrievalConfig, Retriever
    from server.retrieval.vector_index import VectorIndex

    manifest = json.loads((args.bundle / "manifest.json").read_text())
    ef, dim = int(manifest["index"]["ef"]), int(manifest["embedding"]["dim"])
    store = ItemStore.open(args.bundle / ITEMS_DB, readonly=True)
    catalog = store.catalog()
    store.close()
    n = len(catalog)
    hnsw = VectorIndex(load_index(args.bundle / INDEX_FILE, dim=dim, ef=ef, max_elements=n), ef)
    vectors = hnsw.vectors[:n]
    rng = np.random.default_rng(0)
    queries = vectors[rng.choice(n, min(args.queries, n), replace=False)]

    with tempfile.TemporaryDirectory() as tmp:
        proc, uri = start_milvus(Path(tmp) / "milvus")
        try:
            client = connect(uri)
            t0 = time.perf_counter()
            create_collection(client, "bench", vectors, catalog.attributes,
                              m=int(manifest["index"]["m"]), ef_construction=200)
            load_s = time.perf_counter() - t0
            milvus = MilvusIndex(client, "bench", hnsw.vectors, hnsw.present, catalog.attributes, ef=ef)
            exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]

            def agreement(a: np.ndarray, b: np.ndarray) -> float:
                same = [set(x) == set(y) or np.allclose(np.sort(vectors[x] @ q), np.sort(vectors[y] @ q), atol=1e-5)
                        for x, y, q in zip(a.tolist(), b.tolist(), queries)]
                return round(float(np.mean(same)), 4)

            results: dict = {"items": n, "dim": dim, "bundle_ef": ef, "milvus_load_s": round(load_s, 2)}
            for search_ef in (ef, 64):
                from_h, _ = hnsw.knn(queries, 10, ef=search_ef)
                from_m, _ = milvus.knn(queries, 10, ef=search_ef)
                results[f"ef={search_ef}"] = {
                    "same_top10_milvus_vs_hnsw": agreement(from_m, from_h),
                    "hnsw_same_as_exact": agreement(from_h, exact),
                    "milvus_same_as_exact": agreement(from_m, exact),
                }
            name, value = next(iter(next(a for a in catalog.attributes if a).items()))
            item_filter = ItemFilter(attribute_equals={name: value}, exclude_labels=tuple(range(20)))
            postings = AttributePostings(catalog.attributes)
            latency = {}
            for label, backend in (("hnsw", hnsw), ("milvus", milvus)):
                retriever = Retriever(backend, postings, RetrievalConfig())
                latency[label] = {
                    "knn_k10": percentiles(timed(lambda q: backend.knn(q[None, :], 10), queries)),
                    "retrieve_filtered_k10": percentiles(timed(
                        lambda q: retriever.retrieve([Interest(q, 1.0, "query")], 10, item_filter), queries)),
                }
            results["latency"] = latency
            data_bytes = sum(p.stat().st_size for p in (Path(tmp) / "milvus").rglob("*") if p.is_file())
            results["memory_bytes_per_item"] = {
                "hnsw_file": round((args.bundle / INDEX_FILE).stat().st_size / n, 1),
                "dense_copy_in_process": dim * 4,
                "milvus_lite_data_dir": round(data_bytes / n, 1),
            }
            print(json.dumps(results, indent=2))
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
