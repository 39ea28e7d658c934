"""`recserve train-ranker` on a small real sample: the server's candidates, a better ranker."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from tests.server.conftest import _take_sample


@pytest.fixture(scope="module")
def sample(tiny_onnx_dir, tmp_path_factory) -> tuple[Path, Path]:
    from export.build import build_bundle
    from export.demo import demo_catalog_path, demo_interactions_path

    work = tmp_path_factory.mktemp("ranker-sample")
    catalog, events = _take_sample(Path(demo_catalog_path()), Path(demo_interactions_path()),
                                   work / "data", n_items=300)
    build_bundle(tiny_onnx_dir, catalog, events, work / "bundle", progress=False)
    return work / "bundle", events


def test_candidate_rows_are_what_the_engine_ranks(sample):
    from server.requests import RecommendQuery
    from server.served_bundle import ServedBundle
    from train.evaluation.engine_recommender import make_engine
    from train.ranker.candidates import candidate_rows

    bundle = ServedBundle.load(sample[0])
    engine = make_engine(bundle)
    for history in ([5, 9, 2], [40], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 3]):
        history = np.asarray(history, dtype=np.int64)
        rows = candidate_rows(engine, history, k=10)
        ours = rows.labels[np.argsort(-(rows.features @ engine.weights), kind="stable")[:10]]
        ids = tuple(bundle.catalog.item_ids[i] for i in history)
        answer = asyncio.run(engine.recommend(RecommendQuery(history=ids, k=10)))
        assert [bundle.catalog.item_ids[i] for i in ours] == [r.item_id for r in answer.items]


def test_fitted_ranker_beats_initial_weights_and_ships_in_a_new_bundle(sample, tmp_path):
    from export.bundle import read_manifest
    from server.served_bundle import ServedBundle
    from train import cli_ranker
    from train.evaluation.engine_recommender import make_engine

    bundle_dir, interactions = sample
    before = (bundle_dir / "manifest.json").read_text()
    parser = argparse.ArgumentParser()
    cli_ranker.add_arguments(parser)
    out = tmp_path / "with-ranker"
    args = parser.parse_args(["--bundle", str(bundle_dir), "--interactions", str(interactions),
                              "--out", str(out), "--quiet"])
    assert cli_ranker.run(args) == 0

    manifest = read_manifest(out, verify=True)
    ranker = manifest["ranker"]
    validation = ranker["validation"]
    assert validation["learned"]["examples"] == validation["initial"]["examples"] > 100
    # Held-out (later) slice: the learned weights order the same candidates better.
    assert validation["learned"]["ndcg@10"] > validation["initial"]["ndcg@10"]
    assert manifest["parent_version"] == json.loads(before)["version"]
    assert (bundle_dir / "manifest.json").read_text() == before  # source bundle untouched
    engine = make_engine(ServedBundle.load(out))
    from server.ranking.features import FEATURE_NAMES

    served = dict(zip(FEATURE_NAMES, engine.weights.tolist()))
    assert served == pytest.approx(ranker["weights"], rel=1e-6)  # the server uses them
