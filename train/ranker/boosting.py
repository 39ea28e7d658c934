"""LightGBM over the engine's candidates, exported to ONNX for the server.

Each example is one request: its candidates are a query group, the candidate equal to the
next item is relevant (label 1), the rest are not. Groups whose next item was not retrieved
teach nothing about ordering and are left out of the fit and of early stopping.

Objective: binary log-loss (is this candidate the next item?), early-stopped on the groups'
NDCG@10. On Online Retail's validation slice it ordered candidates better than LambdaRank
(NDCG@10 0.097 against 0.083-0.088 on held-out requests, docs/EVALUATION.md); one positive
per group gives LambdaRank's pairwise gradients little to work with. The served score is
the raw score (log-odds): the sigmoid changes no order, so the exported model stops there.

Nothing here is tuned to one data set; the capacity follows the amount of training data:
- leaves: about one per 25 positive examples, between 7 and 31 (few positives, small trees;
  31 is LightGBM's default and a serving-cost cap. Refitted on one Online Retail bundle, at
  most 60 trees of at most 63 / 31 / 15 leaves: rank stage 0.98 / 0.84 / 0.74 ms p50, test NDCG@10 0.1439 / 0.1443 /
  0.1405, docs/EVALUATION.md);
- min_data_in_leaf: 0.5 % of the training rows, at least 20 (a leaf speaks for many rows);
- rounds: at learning rate 0.1 (LightGBM's default), stopped when NDCG@10 on the later time
  slice (the validation examples) has not improved for 50 rounds; the best round is kept, up
  to the serving cost budget (RankerFitConfig.max_trees, 60).
  On Online Retail the validation curve is nearly flat past ~60 rounds and two builds of the same
  events kept 62 and 193 trees (rank stage 1.1 ms vs 2.3 ms). Refitted on one bundle (with
  the version-4 features): test NDCG@10 0.1453 with 85 trees (stopped below the budget) and
  0.1439 with a budget of 60 (docs/EVALUATION.md).
The thresholds are rounded down to float32 (float32_thresholds: the same decisions for
float32 features, which is all the server has), the model is converted with onnxmltools and
checked against LightGBM's own predictions on the validation rows before it may ship (the
largest difference goes into the manifest).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from train.evaluation.metrics import ndcg_at, recall_at
from train.ranker.fit import CandidateSet

ONNX_TOLERANCE = 1e-4  # trees compare float32 thresholds; anything larger is a conversion bug
LEARNING_RATE = 0.1  # LightGBM's own default; 0.05 kept 4x the trees for 2 % more NDCG (below noise)
MAX_ROUNDS = 1000
MAX_LEAVES = 31  # LightGBM's own default num_leaves; deeper trees cost more to serve (module docstring)
PATIENCE = 50


@dataclass
class FittedRanker:
    booster: Any                      # lightgbm.Booster, best iteration kept
    onnx: bytes                       # the same trees as an ONNX TreeEnsemble graph
    features: tuple[str, ...]
    params: dict[str, Any]
    best_round: int
    onnx_max_abs_diff: float
    info: dict[str, Any] = field(default_factory=dict)


def data_derived_params(rows: int, positives: int, seed: int, threads: int,
                        learning_rate: float = LEARNING_RATE, max_leaves: int = MAX_LEAVES) -> dict[str, Any]:
    """LightGBM parameters sized by the training data (module docstring)."""
    leaves = int(np.clip(positives // 25, min(7, max_leaves), max_leaves))
    return {
        "objective": "binary", "metric": "ndcg", "eval_at": [10],
        "learning_rate": learning_rate, "num_leaves": leaves,
        "min_data_in_leaf": max(20, rows // 200), "feature_fraction": 0.9,
        "bagging_fraction": 0.8, "bagging_freq": 1, "lambda_l2": 1.0,
        "seed": seed, "deterministic": True,
        "force_row_wise": True, "num_threads": threads, "verbose": -1,
    }


def _groups(candidates: CandidateSet) -> tuple[np.ndarray, np.ndarray, list[int]]:
    used = [i for i, p in enumerate(candidates.positive) if p.any()]
    if not used:
        return np.empty((0, 0), np.float32), np.empty(0, np.int32), []
    x = np.concatenate([candidates.features[i] for i in used]).astype(np.float32)
    y = np.concatenate([candidates.positive[i] for i in used]).astype(np.int32)
    return x, y, [len(candidates.positive[i]) for i in used]


def served_trees(booster: Any) -> Any:
    """The trees the server runs: float32-safe thresholds, raw score out (no sigmoid)."""
    return float32_thresholds(booster, raw_score=True)


def float32_thresholds(booster: Any, raw_score: bool = False) -> Any:
    """The same trees with every split threshold rounded DOWN to a float32 value (and,
    with raw_score, declared a regression so predictions and the ONNX graph are the raw
    sum of the leaves).

    LightGBM compares float32 features with double thresholds (x <= t); ONNX's tree
    ensemble stores float32 thresholds, and rounding t to the nearest float32 can move it
    above a feature value that lies just over t, sending that row the other way. For any
    float32 x, x <= t exactly when x <= (the largest float32 <= t), so with these
    thresholds LightGBM and ONNX Runtime take the same branch for every row.
    """
    import lightgbm as lgb

    # tree_sizes gives each tree's length in bytes: rewritten numbers change it, and
    # LightGBM parses the trees one after the other without it.
    lines = [line for line in booster.model_to_string().split("\n")
             if not line.startswith("tree_sizes=")]
    for i, line in enumerate(lines):
        if line.startswith("threshold="):
            values = np.asarray(line[len("threshold="):].split(), dtype=np.float64)
            down = values.astype(np.float32)
            above = down.astype(np.float64) > values
            down[above] = np.nextafter(down[above], np.float32(-np.inf))
            lines[i] = "threshold=" + " ".join(repr(float(v)) for v in down)
        elif raw_score and line.startswith("objective="):
            lines[i] = "objective=regression"
        elif raw_score and line.startswith("[objective: "):  # the parameters the converter reads
            lines[i] = "[objective: regression]"
    return lgb.Booster(model_str="\n".join(lines))


def to_onnx(booster: Any, n_features: int) -> bytes:
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    from server.ranking.gbdt import INPUT_NAME

    model = onnxmltools.convert_lightgbm(
        booster, initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        target_opset=15, zipmap=False)
    return model.SerializeToString()


def fit_gbdt(train: CandidateSet, validation: CandidateSet, feature_names: Sequence[str],
             seed: int = 0, threads: int = 0, learning_rate: float = LEARNING_RATE,
             max_rounds: int = MAX_ROUNDS, max_leaves: int = MAX_LEAVES) -> FittedRanker:
    """Fit, early-stop on the validation slice, convert to ONNX and check the conversion."""
    import lightgbm as lgb

    from export.cpus import usable_cpus
    from server.ranking.gbdt import GBDTRanker

    x, y, groups = _groups(train)
    if not groups:
        raise ValueError("no training example has its next item among the candidates")
    vx, vy, vgroups = _groups(validation)
    params = data_derived_params(len(x), len(groups), seed, threads or usable_cpus(), learning_rate,
                                 max_leaves)
    names = list(feature_names)
    data = lgb.Dataset(x, y, group=groups, feature_name=names, free_raw_data=False)
    kwargs: dict[str, Any] = {}
    if vgroups:
        kwargs = {"valid_sets": [lgb.Dataset(vx, vy, group=vgroups, reference=data)],
                  "callbacks": [lgb.early_stopping(PATIENCE, verbose=False)]}
    booster = lgb.train(params, data, num_boost_round=max_rounds, **kwargs)
    best = int(booster.best_iteration or booster.current_iteration())
    if best < booster.current_iteration():  # keep only the trees up to the best round
        booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    booster = served_trees(booster)
    onnx = to_onnx(booster, len(names))
    check = vx if len(vx) else x
    served = GBDTRanker(onnx, names, names).score(check)
    diff = float(np.max(np.abs(served - booster.predict(check)))) if len(check) else 0.0
    if diff > ONNX_TOLERANCE:
        raise RuntimeError(f"the ONNX ranker differs from LightGBM by {diff:g}")
    return FittedRanker(booster, onnx, tuple(names), params, best, diff,
                        {"train_rows": int(len(x)), "train_groups": len(groups),
                         "validation_groups": len(vgroups)})


def gbdt_metrics(candidates: CandidateSet, ranker: FittedRanker, k: int = 10) -> dict:
    """NDCG@k / Recall@k of ordering each example's candidates by the ONNX ranker."""
    from server.ranking.gbdt import GBDTRanker

    session = GBDTRanker(ranker.onnx, ranker.features, ranker.features)
    positions = np.full(len(candidates.features), -1, dtype=np.int64)
    for i, (rows, positive) in enumerate(zip(candidates.features, candidates.positive)):
        if positive.any():
            order = np.argsort(-session.score(rows), kind="stable")
            positions[i] = int(np.flatnonzero(positive[order])[0])
    return {"examples": len(positions), f"ndcg@{k}": round(ndcg_at(positions, k), 5),
            f"recall@{k}": round(recall_at(positions, k), 5)}
