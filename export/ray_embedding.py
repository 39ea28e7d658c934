"""`recserve build --engine ray`: embed a catalog with Ray Data over a pool of ONNX Runtime actors.

Each actor loads the bundle's encoder once and embeds its batches with the same
`embed_texts` the local build uses, so the vectors are the local build's. Rows carry their
label and come back in any order; they are written into place by label. One actor per GPU
when the cluster has GPUs (ONNX Runtime picks the CUDA provider there), else `workers` CPU
actors with `threads_per_worker` intra-op threads each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from export.embedding import embed_texts
from export.runtime import EncoderRuntime, RuntimeConfig
from export.tokenization import TextTokenizer


class _EncoderActor:
    """One ONNX Runtime session per actor, reused for every batch it is handed."""

    def __init__(self, model_path: str, tokenizer_dir: str, max_length: int, threads: int) -> None:
        self.runtime = EncoderRuntime(Path(model_path), RuntimeConfig(intra_op_threads=threads))
        self.tokenizer = TextTokenizer(Path(tokenizer_dir), max_length)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = embed_texts(self.runtime, self.tokenizer, [str(t) for t in batch["text"]])
        return {"label": batch["label"], "vector": vectors}


def embed_with_ray(model_path: str | Path, tokenizer_dir: str | Path, max_length: int,
                   texts: Sequence[str], *, workers: int = 0, threads_per_worker: int = 1,
                   batch_size: int = 512, on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """[len(texts), dim] float32 vectors in input order, embedded by a Ray actor pool.

    Uses the running Ray cluster (ray.init() is called when none is). workers = 0: one actor
    per GPU, else one per `threads_per_worker` CPUs of the cluster.
    """
    import ray

    if not ray.is_initialized():
        ray.init(log_to_driver=False)
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if workers <= 0:
        workers = gpus or max(1, int(resources.get("CPU", 1)) // max(1, threads_per_worker))
    items = ray.data.from_items([{"label": i, "text": t} for i, t in enumerate(texts)])
    embedded = items.map_batches(
        _EncoderActor, batch_size=batch_size, batch_format="numpy",
        fn_constructor_kwargs={"model_path": str(model_path), "tokenizer_dir": str(tokenizer_dir),
                               "max_length": max_length, "threads": threads_per_worker},
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_gpus=1 if gpus else 0, num_cpus=0 if gpus else threads_per_worker,
    )
    out: np.ndarray | None = None
    for batch in embedded.iter_batches(batch_size=None, batch_format="numpy"):
        if out is None:
            out = np.empty((len(texts), batch["vector"].shape[1]), np.float32)
        out[batch["label"]] = batch["vector"]
        if on_batch is not None:
            on_batch(len(batch["label"]))
    return out if out is not None else np.empty((0, 0), np.float32)
