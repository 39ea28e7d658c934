"""The dense vector copy both backends keep by label (exact scoring, interests, features): live
upserts write rows into it, growing it geometrically so appends stay amortised O(1)."""

from __future__ import annotations

import numpy as np


def write_rows(vectors: np.ndarray, present: np.ndarray, labels: np.ndarray,
               rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, present) with `rows` stored at `labels` and marked present; new arrays when a
    label lies past the end (1.5x growth), else the same arrays written in place."""
    top = int(labels.max()) + 1
    if top > len(vectors):
        grown = np.zeros((max(top, int(len(vectors) * 1.5)), vectors.shape[1]), np.float32)
        grown[: len(vectors)] = vectors
        grown_present = np.zeros(len(grown), dtype=bool)
        grown_present[: len(present)] = present
        vectors, present = grown, grown_present
    vectors[labels] = rows
    present[labels] = True
    return vectors, present
