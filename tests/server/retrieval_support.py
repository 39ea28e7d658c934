"""Shared by the retrieval tests: clustered vectors and a backend of either kind over them."""

from __future__ import annotations

import hnswlib
import numpy as np

from export.milvus_collection import connect, create_collection
from server.retrieval.milvus_index import MilvusIndex
from server.retrieval.vector_index import VectorIndex

DIM, N = 16, 3000


def clustered(n: int, clusters: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, DIM))
    assignment = rng.integers(0, clusters, n)
    vectors = centers[assignment] + 0.3 * rng.normal(size=(n, DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), assignment


def _hnsw(vectors: np.ndarray, capacity: int) -> VectorIndex:
    index = hnswlib.Index(space="ip", dim=DIM)
    index.init_index(max_elements=capacity, M=16, ef_construction=100)
    index.add_items(vectors, np.arange(len(vectors)))
    return VectorIndex(index, default_ef=64)


def make_backend(kind: str, vectors: np.ndarray, attrs: list[dict], uri: str | None, name: str):
    hnsw = _hnsw(vectors, len(vectors) + 200)
    if kind == "hnsw":
        return hnsw
    client = connect(uri)
    create_collection(client, name, vectors, attrs, m=16, ef_construction=100, overwrite=True)
    return MilvusIndex(client, name, hnsw.vectors, hnsw.present, attrs, ef=64)
