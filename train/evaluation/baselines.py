"""Classical baselines, fitted on the training events of a split only.

Each recommender maps a history (item labels, oldest..newest) to its top-k item labels over
the whole catalog. They are what the encoder has to beat:
- popularity: most bought items in the training events;
- last-item transitions: the items that most often came right after the history's last
  item in the training sequences (the published "next item after the last one" reference),
  topped up by popularity;
- implicit ALS (the `implicit` library), when it is installed: user factors for a
  history are solved from the item factors (recalculate_user), so new users work too.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import scipy.sparse as sp

from train.data import EventSequences


class Recommender(Protocol):
    name: str

    def recommend(self, history: np.ndarray, k: int) -> np.ndarray: ...


def training_pairs(events: EventSequences, training: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(user index, item label) of every training event."""
    users = np.repeat(np.arange(len(events.user_ids)), np.diff(events.starts))
    return users[training], events.labels[training]


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    k = min(k, len(scores))
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.lexsort((top, -scores[top]))]  # score desc, label asc on ties


class PopularityRecommender:
    name = "popularity"

    def __init__(self, events: EventSequences, training: np.ndarray, n_items: int) -> None:
        _, labels = training_pairs(events, training)
        self.counts = np.bincount(labels, minlength=n_items).astype(np.float64)
        self.ranked = _top(self.counts, n_items)

    def recommend(self, history: np.ndarray, k: int) -> np.ndarray:
        return self.ranked[:k]


class TransitionRecommender:
    """Counts of item j right after item i in the training part of each user's sequence."""

    name = "last-item transitions"

    def __init__(self, events: EventSequences, training: np.ndarray, n_items: int) -> None:
        rows, cols = [], []
        for u in range(len(events.user_ids)):
            lo, hi = int(events.starts[u]), int(events.starts[u + 1])
            seq = events.labels[lo:hi][training[lo:hi]]
            rows.append(seq[:-1])
            cols.append(seq[1:])
        rows_a, cols_a = np.concatenate(rows), np.concatenate(cols)
        self.transitions = sp.csr_matrix(
            (np.ones(len(rows_a)), (rows_a, cols_a)), shape=(n_items, n_items))
        self.transitions.sum_duplicates()
        popularity = PopularityRecommender(events, training, n_items).counts
        # Popularity breaks ties and fills the list below the last transition.
        self.fallback = popularity / (popularity.max() + 1.0)

    def recommend(self, history: np.ndarray, k: int) -> np.ndarray:
        if len(history) == 0:
            return _top(self.fallback, k)
        scores = self.transitions[int(history[-1])].toarray().ravel() + self.fallback
        return _top(scores, k)


class ALSRecommender:
    """implicit's AlternatingLeastSquares on the training user-item matrix."""

    name = "implicit ALS"

    def __init__(self, events: EventSequences, training: np.ndarray, n_items: int, *,
                 factors: int = 64, iterations: int = 15, regularization: float = 0.05,
                 alpha: float = 10.0, seed: int = 0) -> None:
        from implicit.als import AlternatingLeastSquares  # optional: the `train` extra
        from threadpoolctl import threadpool_limits

        # implicit runs its own threads; a second BLAS pool inside them only contends.
        self._limits = threadpool_limits(1, "blas")

        users, labels = training_pairs(events, training)
        matrix = sp.csr_matrix((np.ones(len(users), np.float32), (users, labels)),
                               shape=(len(events.user_ids), n_items))
        matrix.sum_duplicates()
        matrix.data = np.log1p(matrix.data) * alpha  # confidence of repeated purchases
        self.model = AlternatingLeastSquares(factors=factors, iterations=iterations,
                                             regularization=regularization, random_state=seed)
        self.model.fit(matrix, show_progress=False)
        self.item_factors = np.asarray(self.model.item_factors)
        self.alpha, self.n_items = alpha, n_items

    def recommend(self, history: np.ndarray, k: int) -> np.ndarray:
        counts = np.bincount(history, minlength=self.n_items).astype(np.float32)
        row = sp.csr_matrix(np.log1p(counts) * self.alpha)
        user = np.asarray(self.model.recalculate_user(0, row)).ravel()
        return _top(self.item_factors @ user, k)
