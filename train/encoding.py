"""Encoding many texts with the model being trained, with a rich progress bar."""

from __future__ import annotations

from typing import Sequence

import numpy as np

CHUNK = 512  # texts per model.encode call: one progress update each


def encode_texts(model, texts: Sequence[str], *, batch_size: int = 64, progress=None,
                 description: str = "encoding") -> np.ndarray:
    """[n, dim] float32 L2-normalised vectors (what the exported graph outputs).

    `progress` is a rich Progress or None. model.encode switches the model to eval mode;
    the training loop switches it back.
    """
    task = progress.add_task(description, total=len(texts)) if progress is not None else None
    parts = []
    for begin in range(0, len(texts), CHUNK):
        chunk = list(texts[begin: begin + CHUNK])
        parts.append(model.encode(chunk, batch_size=batch_size, convert_to_numpy=True,
                                  normalize_embeddings=True, show_progress_bar=False))
        if task is not None:
            progress.advance(task, len(chunk))
    if task is not None:
        progress.remove_task(task)
    if not parts:
        # get_embedding_dimension is the sentence-transformers 5 name of the older method.
        dimension = getattr(model, "get_embedding_dimension", None) \
            or model.get_sentence_embedding_dimension
        return np.zeros((0, dimension()), np.float32)
    return np.concatenate(parts).astype(np.float32, copy=False)
