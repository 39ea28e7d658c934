"""Fit a bundle's ranker on its own candidates, by time slices of the interaction log.

Used by `recserve train-ranker` (refit an existing bundle) and by `recserve build` (fit
inside the build, so a bundle built the default way serves with a learned ranker).

Time slices by event-time quantiles: the interaction tables the features read come from
events before `fit_start`; fit examples are the events in [fit_start, validation_start),
validation examples the events after. Candidates and features are the server's own
(train/ranker/candidates.py). Two rankers are fitted on the same rows: logistic weights
for the linear scorer (explanations, and the fallback) and LightGBM trees exported to ONNX
(what the server scores with). The manifest "ranker" section records both, the validation
figures of each, and the ONNX file's name and sha256.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pydantic import Field

from export.errors import InvalidInput
from export.settings import RecserveSettings, settings_config


class RankerFitConfig(RecserveSettings):
    model_config = settings_config("ranker")

    fit_start: float = Field(0.8, gt=0, lt=1)
    """Event-time quantile where fit examples start (the feature tables use events before)."""
    validation_start: float = Field(0.9, gt=0, lt=1)
    """Event-time quantile where validation (early-stopping) examples start."""
    per_user: int = Field(10, ge=1)
    """Most fit examples per user, so heavy buyers do not drown the rest."""
    validation_per_user: int = Field(3, ge=1)
    """Most validation (early-stopping) examples per user: fewer than for fitting, so the
    rounds are chosen for users at large, as leave-last-out evaluation counts them."""
    max_examples: int = Field(10000, ge=10)
    """Most fit examples (requests); each contributes all of its candidates as rows."""
    session_start_share: float = Field(0.0, ge=0, le=1)
    """Share of examples asked at the start of their moment (no same-timestamp events in the
    history). 0 fits the next item of a basket already begun, what leave-last-out asks; on
    Online Retail 0.5 raised time-split NDCG@10 0.061 -> 0.080 and cut leave-last-out
    0.145 -> 0.126 (docs/EVALUATION.md)."""
    learning_rate: float = Field(0.1, gt=0, le=1)
    """LightGBM's shrinkage (its own default). The served cost grows with the trees early
    stopping keeps: on Online Retail 0.1 kept 62 trees (NDCG@10 0.1425, rank stage 1.1 ms)
    and 0.05 kept 256 (0.1454, 3.3 ms; docs/BENCHMARKS.md)."""
    max_trees: int = Field(60, ge=1)
    """Most boosting rounds kept: the serving cost budget; early stopping picks the best round
    up to it. A 63-leaf tree cost about 9 us a request (221 real candidates, one core: 59 / 85 /
    193 trees gave a rank stage of 1.09 / 1.34 / 2.28 ms p50 on Online Retail); with trees of
    at most 31 leaves (max_leaves) 60 trees leave the rank stage at 0.84 ms (docs/BENCHMARKS.md)."""
    max_leaves: int = Field(31, ge=2)
    """Most leaves a tree may have (fewer when there are few positives: one per 25). LightGBM's
    default; 63 cost 0.14 ms more a request on Online Retail for the same test NDCG@10."""
    validation_examples: int = Field(1500, ge=10)
    """Most validation examples."""
    k: int = Field(10, ge=1)
    """NDCG/Recall cut-off of the validation figures."""
    C: float = Field(1.0, gt=0)
    """Inverse L2 strength of the linear (logistic) fit."""
    min_positive_examples: int = Field(50, ge=1)
    """Fewer fit examples with their next item among the candidates: no trees, linear only."""
    history_adapter: bool = True
    """Fit the map of history interests toward the items bought next (train/history_adapter.py)
    on the events before fit_start, so the ranker is fitted on the candidates it serves with;
    it is kept only where it beats the identity on held-out steps."""
    seed: int = 0
    """Seed of example sampling, of the adapter's fit and of LightGBM."""


@dataclass
class FittedBundleRanker:
    section: dict[str, Any]   # manifest["ranker"]
    onnx: bytes | None        # ranker.onnx, None when only linear weights were fitted
    adapter: tuple[dict[str, Any], np.ndarray | None] | None = None
    """(manifest["history_adapter"], its matrix or None when not kept); None: not fitted."""


def fit_bundle_ranker(bundle_dir: str | Path, interactions: str | Path, columns,
                      config: RankerFitConfig,
                      progress: Callable[[str, int], Callable[[], None]] | None = None
                      ) -> FittedBundleRanker:
    """Fit both rankers for the bundle at bundle_dir (module docstring)."""
    from export.catalog import read_interactions
    from server.ranking.features import FEATURE_NAMES
    from server.ranking.gbdt import RANKER_FILE, RankerSection
    from server.served_bundle import ServedBundle
    from train.evaluation.engine_recommender import make_engine
    from train.evaluation.training_view import load_bundle_events, with_training_tables
    from train.ranker.boosting import fit_gbdt, gbdt_metrics
    from train.ranker.cold_items import cold_copies, with_cold_copies
    from train.ranker.examples import window_examples
    from train.ranker.fit import collect, fit_weights, ranking_metrics

    if not config.fit_start < config.validation_start:
        raise InvalidInput("need fit_start < validation_start")
    bundle = ServedBundle.load(bundle_dir)
    events = load_bundle_events(bundle, interactions, columns)
    fit_start, validation_start = (float(t) for t in np.quantile(
        events.timestamps, [config.fit_start, config.validation_start]))
    past = [e for e in read_interactions(interactions, columns, known_items=bundle.catalog.label_of)
            if e.timestamp < fit_start]
    adapter = None
    if config.history_adapter:
        from train.history_adapter import AdapterFitConfig, fit_history_adapter

        fitted_adapter = fit_history_adapter(bundle.index.vectors, events, end=fit_start,
                                             config=AdapterFitConfig(seed=config.seed))
        adapter = (fitted_adapter.info, fitted_adapter.matrix)
        bundle.history_adapter = fitted_adapter.matrix
    engine = make_engine(with_training_tables(bundle, past), linear_only=True)
    # Items without interactions are learned from the cold copies below, not from the cold
    # bridge's candidates: fitted with them, held-out NDCG@10 fell 0.1443 -> 0.1391 and cold
    # items did no better (Online Retail, docs/EVALUATION.md "Previous default build: cold
    # items reached by content").
    engine.sources = [source for source in engine.sources if source.name != "cold_bridge"]
    initial = {n: float(w) for n, w in zip(FEATURE_NAMES, engine.weights)}
    examples = {
        "fit": window_examples(events, fit_start, validation_start, config.per_user,
                               config.max_examples, config.seed, config.session_start_share),
        "validation": window_examples(events, validation_start, np.inf, config.validation_per_user,
                                      config.validation_examples, config.seed + 1,
                                      config.session_start_share),
    }
    if not examples["fit"] or not examples["validation"]:
        raise InvalidInput("a time slice of the interactions has no examples; "
                           "move fit_start/validation_start")
    sets = {name: collect(engine, chosen, config.k,
                          on_example=progress(f"candidates ({name})", len(chosen)) if progress else None)
            for name, chosen in examples.items()}
    learned = fit_weights(sets["fit"], C=config.C, seed=config.seed)
    k = config.k
    validation: dict[str, Any] = {
        "initial": ranking_metrics(sets["validation"], initial, k),
        "linear": ranking_metrics(sets["validation"], learned, k),
        "fit_examples": len(examples["fit"]),
        "candidate_recall": {name: round(s.candidate_recall, 5) for name, s in sets.items()},
        "slices": {"tables_before": fit_start, "fit": [fit_start, validation_start],
                   "validation_from": validation_start},
    }
    validation["learned"] = validation["linear"]  # the linear row under its historic name
    section: dict[str, Any] = {
        "weights": learned, "initial_weights": initial, "validation": validation,
        "method": "logistic regression (scikit-learn), class-balanced, L2 C=%g" % config.C,
        "config": config.model_dump(mode="json"),
    }
    positives = sum(bool(p.any()) for p in sets["fit"].positive)
    if positives < config.min_positive_examples:
        section["model"] = None
        section["model_skipped"] = (f"{positives} fit examples have their next item among the "
                                    f"candidates; trees need {config.min_positive_examples}")
        return FittedBundleRanker(section, None, adapter)
    # trees also learn the cold case (train/ranker/cold_items.py); early stopping on the
    # validation slice as logged (stopping on both cut the rounds and cost warm NDCG)
    trees = fit_gbdt(with_cold_copies(sets["fit"], config.seed), sets["validation"], FEATURE_NAMES,
                     seed=config.seed, learning_rate=config.learning_rate, max_rounds=config.max_trees,
                     max_leaves=config.max_leaves)
    validation["gbdt"] = gbdt_metrics(sets["validation"], trees, k)
    cold_validation = cold_copies(sets["validation"], config.seed + 1)
    validation["cold_copies"] = {"gbdt": gbdt_metrics(cold_validation, trees, k),
                                 "linear": ranking_metrics(cold_validation, learned, k)}
    import lightgbm

    model = RankerSection(RANKER_FILE, hashlib.sha256(trees.onnx).hexdigest(),
                          trees.features).as_manifest()
    model.update(objective="binary (served: raw log-odds)", library=f"lightgbm {lightgbm.__version__}",
                 rounds=trees.best_round, params=trees.params,
                 onnx_max_abs_diff=trees.onnx_max_abs_diff, **trees.info)
    section["model"] = model
    section["method"] += "; LightGBM binary trees exported to ONNX (served)"
    return FittedBundleRanker(section, trees.onnx, adapter)
