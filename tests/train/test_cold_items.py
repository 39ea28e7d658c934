"""Cold-item copies of the ranker's training groups: what a cold row looks like, and that
trees fitted with them rank a cold item that matches the history's content."""

from __future__ import annotations

import numpy as np

from server.ranking.features import COLUMN, FEATURE_NAMES, INTERACTION_FEATURES
from train.ranker.cold_items import as_cold, cold_copies, with_cold_copies
from train.ranker.fit import CandidateSet


def _rows(n: int, rng: np.random.Generator) -> np.ndarray:
    rows = rng.random((n, len(FEATURE_NAMES))).astype(np.float32)
    rows[:, COLUMN["source_count"]] = 5
    return rows


def test_a_cold_row_keeps_its_content_features_and_loses_its_interaction_features():
    rng = np.random.default_rng(0)
    rows = _rows(6, rng)
    chosen = np.array([True, False, True, False, False, False])
    cold = as_cold(rows, chosen)
    for name in INTERACTION_FEATURES:
        assert (cold[chosen, COLUMN[name]] == 0).all(), name
    for name in ("retrieval", "history_max_similarity", "attribute_affinity", "rank_content"):
        np.testing.assert_array_equal(cold[:, COLUMN[name]], rows[:, COLUMN[name]])
    assert (cold[chosen, COLUMN["source_count"]] == 1).all()  # found by content only
    np.testing.assert_array_equal(cold[~chosen], rows[~chosen])  # the others as logged
    assert rows[chosen, COLUMN["popularity"]].min() > 0  # the input is not modified


def test_cold_copies_keep_the_labels_and_make_positives_and_negatives_cold_alike():
    rng = np.random.default_rng(1)
    groups = CandidateSet([_rows(200, rng) for _ in range(40)],
                          [np.arange(200) == 0 for _ in range(40)])
    copies = cold_copies(groups, seed=3)
    assert all((a == b).all() for a, b in zip(copies.positive, groups.positive))
    cold = np.concatenate([f[:, COLUMN["popularity"]] == 0 for f in copies.features])
    positive = np.concatenate(copies.positive)
    assert 0.45 < cold.mean() < 0.55
    assert 0.3 < cold[positive].mean() < 0.7  # coldness says nothing about being the target
    both = with_cold_copies(groups, seed=3)
    assert len(both.features) == 80 and both.features[0] is groups.features[0]


def test_trees_fitted_with_cold_copies_rank_a_cold_item_by_its_content():
    """Logged data in which every item without interactions is a negative, whatever its
    content: trees fitted on it alone bury a cold target; with cold copies its content counts."""
    from train.ranker.boosting import fit_gbdt, gbdt_metrics

    rng = np.random.default_rng(2)
    similarity, popularity = COLUMN["history_max_similarity"], COLUMN["popularity"]

    def logged(n_groups: int) -> CandidateSet:
        features, positive = [], []
        for _ in range(n_groups):
            rows = _rows(50, rng) * 0.5
            rows[0, similarity], rows[0, popularity] = rng.uniform(0.8, 1.0), 0.9
            rows[1:11, similarity], rows[1:11, popularity] = rng.uniform(0.75, 0.95, 10), 0.1
            rows[11:31] = as_cold(rows[11:31], np.ones(20, bool))  # items nobody bought yet
            rows[11:31, similarity] = rng.uniform(0.0, 1.0, 20)
            rows[31:41, similarity], rows[31:41, popularity] = rng.uniform(0.0, 0.6, 10), 0.9
            features.append(rows)
            positive.append(np.arange(50) == 0)
        return CandidateSet(features, positive)

    fit, validation = logged(300), logged(100)
    cold_validation = CandidateSet([as_cold(f, np.arange(50) == 0) for f in validation.features],
                                   validation.positive)
    plain = fit_gbdt(fit, validation, FEATURE_NAMES, threads=1)
    aware = fit_gbdt(with_cold_copies(fit, 0), with_cold_copies(validation, 1), FEATURE_NAMES, threads=1)
    plain_cold = gbdt_metrics(cold_validation, plain)["ndcg@10"]
    aware_cold = gbdt_metrics(cold_validation, aware)["ndcg@10"]
    assert aware_cold > 0.5 and aware_cold > plain_cold + 0.2, (plain_cold, aware_cold)
    assert gbdt_metrics(validation, aware)["ndcg@10"] > 0.9  # warm targets still first
