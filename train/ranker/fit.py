"""Logistic regression over the engine's candidate features, folded into linear weights.

Positives are the candidates equal to the next item, negatives the other candidates of the
same request (examples whose next item was not retrieved teach nothing about ordering and
are left out of the fit, but still count as misses in validation). Features are
standardised for the fit; the coefficients divided by the scales are the weights the
server's linear scorer uses (the intercept does not change any order). Features that never
vary in the training rows (query similarity without query texts, say) keep their default
weights, and the learned weights are scaled to the defaults' L1 norm over the learned
features so the two stay comparable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from server.engine import RecommendationEngine
from server.ranking.features import FEATURE_NAMES
from server.ranking.scorer import DEFAULT_WEIGHTS
from train.evaluation.metrics import ndcg_at, recall_at
from train.ranker.candidates import candidate_rows
from train.ranker.examples import NextItemExample


@dataclass
class CandidateSet:
    features: list[np.ndarray]  # per example [C, F]
    positive: list[np.ndarray]  # per example bool [C]

    @property
    def candidate_recall(self) -> float:
        return float(np.mean([p.any() for p in self.positive])) if self.positive else float("nan")


def collect(engine: RecommendationEngine, examples: Sequence[NextItemExample], k: int,
            on_example=None) -> CandidateSet:
    features, positive = [], []
    for example in examples:
        rows = candidate_rows(engine, example.history, k)
        features.append(rows.features)
        positive.append(rows.labels == example.target)
        if on_example:
            on_example()
    return CandidateSet(features, positive)


def fit_weights(train: CandidateSet, C: float = 1.0, seed: int = 0) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression

    used = [i for i, p in enumerate(train.positive) if p.any()]
    if not used:
        raise ValueError("no training example has its next item among the candidates")
    x = np.concatenate([train.features[i] for i in used]).astype(np.float64)
    y = np.concatenate([train.positive[i] for i in used])
    mean, scale = x.mean(axis=0), x.std(axis=0)
    varies = scale > 1e-9
    model = LogisticRegression(C=C, class_weight="balanced", max_iter=2000, random_state=seed)
    model.fit((x[:, varies] - mean[varies]) / scale[varies], y)
    learned = model.coef_.ravel() / scale[varies]
    defaults = np.asarray([DEFAULT_WEIGHTS[n] for n in FEATURE_NAMES])
    norm = np.abs(learned).sum()
    target = np.abs(defaults[varies]).sum()
    weights = defaults.copy()
    weights[varies] = learned * (target / norm if norm > 0 else 1.0)
    return {name: round(float(w), 6) for name, w in zip(FEATURE_NAMES, weights)}


def ranking_metrics(candidates: CandidateSet, weights: dict[str, float], k: int = 10) -> dict:
    """NDCG@k / Recall@k of ordering each example's candidates by features @ weights."""
    vector = np.asarray([weights[n] for n in FEATURE_NAMES], dtype=np.float64)
    positions = np.full(len(candidates.features), -1, dtype=np.int64)
    for i, (rows, positive) in enumerate(zip(candidates.features, candidates.positive)):
        if positive.any():
            scores = rows.astype(np.float64) @ vector
            order = np.argsort(-scores, kind="stable")
            positions[i] = int(np.flatnonzero(positive[order])[0])
    return {"examples": len(positions), f"ndcg@{k}": round(ndcg_at(positions, k), 5),
            f"recall@{k}": round(recall_at(positions, k), 5)}
