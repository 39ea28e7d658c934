"""The exported GBDT ranker: ORT scores exactly as LightGBM does, and only the fitted file runs."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from export.errors import BundleError
from server.ranking.gbdt import RANKER_FILE, GBDTRanker, RankerSection
from train.ranker.boosting import fit_gbdt
from train.ranker.fit import CandidateSet

NAMES = ("retrieval", "co_occurrence", "popularity", "noise")


def _candidates(n_requests: int, seed: int) -> CandidateSet:
    """Requests of 40 candidates; the next item is likelier with co-occurrence and popularity."""
    rng = np.random.default_rng(seed)
    features, positive = [], []
    for _ in range(n_requests):
        x = rng.random((40, len(NAMES))).astype(np.float32)
        utility = 2 * x[:, 1] + x[:, 2] + 0.3 * rng.standard_normal(40)
        hit = np.zeros(40, bool)
        hit[int(np.argmax(utility))] = True
        features.append(x)
        positive.append(hit)
    return CandidateSet(features, positive)


@pytest.fixture(scope="module")
def fitted():
    return fit_gbdt(_candidates(300, 0), _candidates(100, 1), NAMES, seed=0, threads=1)


def test_onnx_scores_equal_lightgbm(fitted):
    rows = np.concatenate(_candidates(20, 2).features)
    ranker = GBDTRanker(fitted.onnx, NAMES, NAMES)
    np.testing.assert_allclose(ranker.score(rows), fitted.booster.predict(rows), atol=1e-5, rtol=0)
    assert fitted.onnx_max_abs_diff <= 1e-5
    assert ranker.score(np.empty((0, len(NAMES)), np.float32)).shape == (0,)


def test_learned_the_signal(fitted):
    from train.ranker.boosting import gbdt_metrics

    held_out = _candidates(100, 3)
    assert gbdt_metrics(held_out, fitted)["ndcg@10"] > 0.5  # random order: about 0.07
    assert fitted.params["min_data_in_leaf"] >= 20 and 7 <= fitted.params["num_leaves"] <= 63


def test_columns_are_matched_by_name(fitted):
    served = ("freshness",) + tuple(reversed(NAMES))  # the server's order may differ
    rows = np.concatenate(_candidates(5, 4).features)
    wide = np.zeros((len(rows), len(served)), np.float32)
    for j, name in enumerate(NAMES):
        wide[:, served.index(name)] = rows[:, j]
    np.testing.assert_allclose(GBDTRanker(fitted.onnx, NAMES, served).score(wide),
                               fitted.booster.predict(rows), atol=1e-5, rtol=0)
    with pytest.raises(BundleError, match="noise"):
        GBDTRanker(fitted.onnx, NAMES, NAMES[:3])


def test_load_verifies_the_manifest_sha256(fitted, tmp_path):
    (tmp_path / RANKER_FILE).write_bytes(fitted.onnx)
    section = RankerSection(RANKER_FILE, hashlib.sha256(fitted.onnx).hexdigest(), NAMES)
    ranker = GBDTRanker.load(tmp_path, section.as_manifest(), NAMES)
    rows = np.concatenate(_candidates(3, 5).features)
    np.testing.assert_allclose(ranker.score(rows), fitted.booster.predict(rows), atol=1e-5, rtol=0)

    tampered = bytearray(fitted.onnx)
    tampered[-1] ^= 0xFF
    (tmp_path / RANKER_FILE).write_bytes(bytes(tampered))
    with pytest.raises(BundleError, match="sha256"):
        GBDTRanker.load(tmp_path, section.as_manifest(), NAMES)
    with pytest.raises(BundleError, match="incomplete"):
        GBDTRanker.load(tmp_path, {"file": RANKER_FILE}, NAMES)


def test_float32_thresholds_keep_lightgbm_and_onnx_on_the_same_branch():
    """Features on adjacent float32 values: nearest-rounded float32 thresholds send rows the
    other way in ONNX; thresholds rounded down keep every decision (and LightGBM's scores)."""
    import lightgbm as lgb

    from train.ranker.boosting import float32_thresholds, to_onnx

    rng = np.random.default_rng(0)
    base = rng.integers(0, 50, size=(2000, 3)).astype(np.float32) / 7
    x = np.concatenate([base, np.nextafter(base, np.float32(1))])
    y = (rng.random(len(x)) < 0.2 + 0.5 * (x[:, 0] > 3)).astype(int)
    params = {"objective": "lambdarank", "min_data_in_leaf": 1, "num_leaves": 63,
              "verbose": -1, "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(x, y, group=[100] * 40), 30)
    names = ["a", "b", "c"]
    naive = GBDTRanker(to_onnx(booster, 3), names, names).score(x)
    assert np.abs(naive - booster.predict(x)).max() > 1e-3  # the problem is real
    fixed = float32_thresholds(booster)
    np.testing.assert_array_equal(fixed.predict(x), booster.predict(x))
    np.testing.assert_allclose(GBDTRanker(to_onnx(fixed, 3), names, names).score(x),
                               booster.predict(x), atol=1e-5, rtol=0)
