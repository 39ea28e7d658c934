"""Classical baselines, fitted on the training events of a split only.

Each recommender maps a history (item labels, oldest..newest) to its top-k item labels over
the whole catalog. They are what the encoder has to beat:
- popularity: most bought items in the training events;
- last-item transitions: the items that most often came right after the history's last
  item in the training sequences (the published "next item after the last one" reference),
  topped up by popularity;
- item-kNN: cosine item-item similarity over the training users (binary user x item
  matrix), summed over the history with recency weights (the classic neighbourhood method);
- implicit ALS (the `implicit` library), when it is installed: user factors for a
  history are solved from the item factors (recalculate_user), so new users work too.
Hyperparameters of item-kNN and ALS are chosen on a validation split of the training
events (train/evaluation/tuning.py), never on the test cases.
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


class ItemKNNRecommender:
    """Cosine item-item similarity over training users; recency-weighted sum over the history.

    half_life: recency half-life in history events (weight 2^(-age/half_life)); self_weight:
    how much an item bought before counts for itself (0 = the textbook zero diagonal).
    """

    name = "item-kNN"

    def __init__(self, events: EventSequences, training: np.ndarray, n_items: int, *,
                 half_life: float = 10.0, self_weight: float = 0.0,
                 similarity: sp.csr_matrix | None = None) -> None:
        self.similarity = similarity if similarity is not None else \
            item_cosine(events, training, n_items)
        self.half_life, self.self_weight, self.n_items = half_life, self_weight, n_items
        popularity = PopularityRecommender(events, training, n_items).counts
        self.fallback = 1e-6 * popularity / (popularity.max() + 1.0)  # ties and empty histories

    def with_params(self, **params) -> "ItemKNNRecommender":
        """The same similarity with other recency/self weights (no refit)."""
        out = object.__new__(ItemKNNRecommender)
        out.__dict__.update(self.__dict__)
        out.__dict__.update(params)
        return out

    def recommend(self, history: np.ndarray, k: int) -> np.ndarray:
        if len(history) == 0:
            return _top(self.fallback, k)
        age = np.arange(len(history) - 1, -1, -1, dtype=np.float64)
        weights = np.power(2.0, -age / self.half_life)
        row = sp.csr_matrix((weights, (np.zeros(len(history), int), history)),
                            shape=(1, self.n_items))
        scores = np.asarray((row @ self.similarity).todense()).ravel()
        if self.self_weight:
            scores += self.self_weight * np.asarray(row.todense()).ravel()
        return _top(scores + self.fallback, k)


def item_cosine(events: EventSequences, training: np.ndarray, n_items: int) -> sp.csr_matrix:
    """[n, n] cosine of items' binary user vectors over the training events, zero diagonal."""
    users, labels = training_pairs(events, training)
    matrix = sp.csr_matrix((np.ones(len(users), np.float32), (users, labels)),
                           shape=(len(events.user_ids), n_items))
    matrix.data[:] = 1.0  # bought at all, not how often (duplicates were summed)
    norms = np.sqrt(np.asarray(matrix.sum(axis=0)).ravel())
    inverse = sp.diags(np.where(norms > 0, 1.0 / np.maximum(norms, 1e-12), 0.0).astype(np.float32))
    normalised = (matrix @ inverse).tocsc()
    similarity = (normalised.T @ normalised).tocsr()
    similarity.setdiag(0)
    similarity.eliminate_zeros()
    return similarity


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
