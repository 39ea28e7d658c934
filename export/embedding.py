"""Embedding many texts offline (catalog build, verification) with the serving batch plan."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from export.runtime import EncoderRuntime
from export.tokenization import DEFAULT_BUCKETS, TextTokenizer, pad_batch, plan_batches


def embed_texts(
    runtime: EncoderRuntime,
    tokenizer: TextTokenizer,
    texts: Sequence[str],
    *,
    max_batch_tokens: int = 8192,
    max_batch_size: int = 128,
    buckets: Sequence[int] = DEFAULT_BUCKETS,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """[len(texts), dim] float32 embeddings, in input order; on_batch(n_done_in_batch)."""
    token_ids = tokenizer.encode(texts)
    out = np.empty((len(texts), runtime.dim), dtype=np.float32)
    for positions, seq_len in plan_batches(
        [len(t) for t in token_ids], max_batch_tokens, max_batch_size, buckets
    ):
        feeds = pad_batch([token_ids[p] for p in positions], seq_len, tokenizer.pad_id)
        out[positions] = runtime.run(feeds)
        if on_batch is not None:
            on_batch(len(positions))
    return out
