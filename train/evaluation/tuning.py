"""Classical baselines tuned fairly: a small grid, chosen on a validation split, never the test.

The validation split is leave-last-out inside the training events of the evaluation split:
each user's last training event is a validation target, the rest is what the candidate is
fitted on. The best setting by NDCG@10 on (a seeded sample of) those targets is then refitted
on all training events and evaluated once on the test cases. The grids are small on purpose
(a baseline should be strong, not searched for days) and written into the results.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from typing import Any, Callable

import numpy as np

from train.data import EventSequences
from train.evaluation.metrics import ndcg_at, target_positions

ALS_GRID = {"factors": (32, 64, 128), "regularization": (0.01, 0.1, 1.0)}
ITEM_KNN_GRID = {"half_life": (2.0, 10.0, 50.0), "self_weight": (0.0, 1.0)}
VALIDATION_CASES = 1000


@dataclass
class Tuned:
    params: dict[str, Any]
    grid: list[dict[str, Any]]  # every setting with its validation NDCG@10


def validation_split(events: EventSequences, training: np.ndarray
                     ) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """(fit mask, histories, targets): each user's last training event held out."""
    fit = training.copy()
    histories, targets = [], []
    for u in range(len(events.user_ids)):
        lo, hi = int(events.starts[u]), int(events.starts[u + 1])
        inside = np.flatnonzero(training[lo:hi]) + lo
        if len(inside) < 2:
            continue
        fit[inside[-1]] = False
        histories.append(events.labels[inside[:-1]])
        targets.append(int(events.labels[inside[-1]]))
    return fit, histories, np.asarray(targets, dtype=np.int64)


def _sample(histories, targets, seed: int):
    if len(targets) <= VALIDATION_CASES:
        return histories, targets
    chosen = np.sort(np.random.default_rng(seed).choice(len(targets), VALIDATION_CASES,
                                                        replace=False))
    return [histories[i] for i in chosen], targets[chosen]


def _ndcg(recommender, histories, targets, k: int = 10) -> float:
    ranked = [recommender.recommend(h, k) for h in histories]
    return ndcg_at(target_positions(ranked, targets), k)


def tune(make: Callable[[np.ndarray, dict], Any], grid: dict[str, tuple],
         events: EventSequences, training: np.ndarray, seed: int) -> Tuned:
    """The grid setting with the best validation NDCG@10; make(fit_mask, params) fits one."""
    fit, histories, targets = validation_split(events, training)
    histories, targets = _sample(histories, targets, seed)
    scored = []
    for values in product(*grid.values()):
        params = dict(zip(grid.keys(), values))
        scored.append({**params, "validation_ndcg@10": round(
            _ndcg(make(fit, params), histories, targets), 5)})
    best = max(scored, key=lambda row: row["validation_ndcg@10"])
    return Tuned({k: best[k] for k in grid}, scored)


def tuned_item_knn(events: EventSequences, training: np.ndarray, n_items: int, seed: int = 0):
    """item-kNN with recency half-life and self weight chosen on validation."""
    from train.evaluation.baselines import ItemKNNRecommender, item_cosine

    fitted: dict[int, ItemKNNRecommender] = {}

    def make(mask: np.ndarray, params: dict) -> ItemKNNRecommender:
        key = id(mask)  # one similarity per training mask; the grid only reweights it
        if key not in fitted:
            fitted[key] = ItemKNNRecommender(events, mask, n_items,
                                             similarity=item_cosine(events, mask, n_items))
        return fitted[key].with_params(**params)

    tuned = tune(make, ITEM_KNN_GRID, events, training, seed)
    best = ItemKNNRecommender(events, training, n_items, **tuned.params)
    best.name = "item-kNN (tuned: half-life %g, self %g)" % (
        tuned.params["half_life"], tuned.params["self_weight"])
    best.tuning = tuned
    return best


def tuned_als(events: EventSequences, training: np.ndarray, n_items: int, seed: int = 0):
    """implicit ALS with factors and regularisation chosen on validation."""
    from train.evaluation.baselines import ALSRecommender

    def make(mask: np.ndarray, params: dict) -> ALSRecommender:
        return ALSRecommender(events, mask, n_items, seed=seed, **params)

    tuned = tune(make, ALS_GRID, events, training, seed)
    best = ALSRecommender(events, training, n_items, seed=seed, **tuned.params)
    best.name = "implicit ALS (tuned: %d factors, reg %g)" % (
        tuned.params["factors"], tuned.params["regularization"])
    best.tuning = tuned
    return best
