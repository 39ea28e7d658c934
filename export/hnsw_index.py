"""The HNSW item index (hnswlib, inner product over L2-normalised vectors).

`choose_ef` measures, rather than guesses, the search breadth: recall@k of the index
against exact (brute-force) search on a seeded sample of the indexed items, for a
ladder of ef values; the smallest ef reaching the target is the bundle's default.
hnswlib does not persist ef: `load_index` sets it again (DESIGN.md, known traps).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Callable

import hnswlib
import numpy as np

from export.cpus import usable_cpus
from export.errors import BundleError, InvalidInput

SPACE = "ip"
EF_LADDER = (10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 512,
             768, 1024)


def build_index(
    vectors: np.ndarray,
    labels: np.ndarray,
    *,
    m: int = 16,
    ef_construction: int = 200,
    threads: int = 0,
    max_elements: int | None = None,
    seed: int = 100,
    chunk: int = 50_000,
    on_added: Callable[[int], None] | None = None,
) -> hnswlib.Index:
    """An index over vectors [n, dim] (float32, normalised) with the given integer labels.

    Items are added in chunks so a caller can show progress (on_added(n_in_chunk)).
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    if vectors.ndim != 2 or len(vectors) != len(labels):
        raise InvalidInput(f"vectors {vectors.shape} and labels {labels.shape} do not match")
    if m < 2 or ef_construction < 1:
        raise InvalidInput(f"bad HNSW parameters m={m} ef_construction={ef_construction}")
    index = hnswlib.Index(space=SPACE, dim=vectors.shape[1])
    index.init_index(max_elements=max(max_elements or len(vectors), 1), M=m,
                     ef_construction=ef_construction, random_seed=seed)
    threads = threads or usable_cpus()
    for start in range(0, len(vectors), chunk):
        index.add_items(vectors[start:start + chunk], labels[start:start + chunk],
                        num_threads=threads)
        if on_added is not None:
            on_added(min(chunk, len(vectors) - start))
    return index


def exact_kth_scores(vectors: np.ndarray, queries: np.ndarray, k: int,
                     exclude: np.ndarray | None = None,
                     block_bytes: int = 64 << 20) -> np.ndarray:
    """The k-th highest inner product per query, by brute force (blocked matmul).

    exclude[i] is a row of vectors not to count for query i (the query item itself).
    Queries go in blocks whose score matrix stays under block_bytes (at 1M items a
    1000-query score matrix alone would be 4 GB).
    """
    k = min(k, len(vectors) - (exclude is not None))
    block = max(1, block_bytes // (4 * max(1, len(vectors))))
    out = np.empty(len(queries), dtype=np.float32)
    for start in range(0, len(queries), block):
        scores = queries[start:start + block] @ vectors.T
        if exclude is not None:
            scores[np.arange(len(scores)), exclude[start:start + block]] = -np.inf
        out[start:start + block] = -np.partition(-scores, k - 1, axis=1)[:, k - 1]
    return out


def recall_at_k(found_distances: np.ndarray, kth_scores: np.ndarray, eps: float = 1e-5) -> float:
    """Mean share of the true top-k found: a returned item counts when its score reaches the
    k-th exact score, so items tied with the k-th (duplicate texts) are not counted as misses.
    """
    k = found_distances.shape[1]
    scores = 1.0 - found_distances  # hnswlib's "ip" distance is 1 - inner product
    hits = (scores >= kth_scores[:, None] - eps).sum(axis=1)
    return float(np.minimum(hits, k).mean()) / k


def measure_recall(index: hnswlib.Index, queries: np.ndarray, kth_scores: np.ndarray, k: int,
                   ef: int, exclude: np.ndarray | None = None, threads: int = 0) -> float:
    """recall@k of the index at one ef; exclude[i] is a label not to count for query i."""
    extra = 0 if exclude is None else 1
    index.set_ef(max(ef, k + extra))
    labels, distances = index.knn_query(queries, k=k + extra, num_threads=threads or usable_cpus())
    if exclude is not None:
        # Drop the excluded label where it was returned, else the last (k+1-th) result.
        drop = np.where((labels == exclude[:, None]).any(axis=1),
                        (labels == exclude[:, None]).argmax(axis=1), k)
        keep = np.ones(labels.shape, dtype=bool)
        keep[np.arange(len(labels)), drop] = False
        distances = distances[keep].reshape(len(labels), k)
    return recall_at_k(distances, kth_scores)


def choose_ef(
    index: hnswlib.Index,
    vectors: np.ndarray,
    *,
    target_recall: float = 0.98,
    sample: int = 1000,
    k: int = 10,
    seed: int = 0,
) -> tuple[int, float]:
    """Smallest ef on EF_LADDER whose recall@k vs exact search reaches target_recall.

    vectors[i] must be the vector of label i. Queries are `sample` items drawn (seeded)
    from vectors (all when fewer); each query's own item is not counted in its top k: it
    is found trivially, and real queries (users) are not catalog items. If no ef reaches
    the target, the largest is returned with its recall; the index keeps the chosen ef.
    """
    n = len(vectors)
    if n == 0:
        raise InvalidInput("cannot choose ef for an empty index")
    if n == 1:
        index.set_ef(EF_LADDER[0])
        return EF_LADDER[0], 1.0
    k = min(k, n - 1)
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    queries = np.ascontiguousarray(vectors[picked], dtype=np.float32)
    kth = exact_kth_scores(np.asarray(vectors, dtype=np.float32), queries, k, exclude=picked)
    chosen, recall = EF_LADDER[-1], 0.0
    for ef in EF_LADDER:
        if ef < k:
            continue
        recall = measure_recall(index, queries, kth, k, ef, exclude=picked)
        if recall >= target_recall:
            chosen = ef
            break
    index.set_ef(chosen)
    return chosen, recall


def save_index(index: hnswlib.Index, path: str | Path) -> None:
    index.save_index(str(path))


def stored_dim(path: str | Path) -> int:
    """The vector dimension recorded in an hnswlib index file's header.

    hnswlib's load_index trusts the dim it is given, and a wrong one reads garbage; the
    header's (label_offset - data_offset) is the float32 vector size, so check it first.
    """
    with open(path, "rb") as fh:
        header = fh.read(48)
    if len(header) < 48:
        raise BundleError(f"{path}: not an hnswlib index (too short)")
    _level0, _max, _count, _per_element, label_offset, data_offset = struct.unpack("<6Q", header)
    size = label_offset - data_offset
    if size <= 0 or size % 4:
        raise BundleError(f"{path}: not an hnswlib index (bad header)")
    return size // 4


def load_index(path: str | Path, *, dim: int, ef: int, max_elements: int | None = None,
               allow_replace_deleted: bool = False) -> hnswlib.Index:
    """Load a saved index; max_elements > its size leaves room for live upserts."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"no HNSW index at {path}")
    if stored_dim(path) != dim:
        raise BundleError(f"{path}: index holds {stored_dim(path)}-dim vectors, expected {dim}")
    index = hnswlib.Index(space=SPACE, dim=dim)
    try:
        index.load_index(str(path), max_elements=max_elements or 0,
                         allow_replace_deleted=allow_replace_deleted)
    except RuntimeError as exc:
        raise BundleError(f"{path}: cannot load HNSW index (dim {dim}?): {exc}") from exc
    index.set_ef(ef)
    return index
