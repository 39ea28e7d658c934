"""`recserve eval` end to end on a small real sample, through the server's own engine."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from tests.server.conftest import _take_sample


@pytest.fixture(scope="module")
def sample(tiny_onnx_dir, tmp_path_factory) -> tuple[Path, Path]:
    """(bundle built from ALL events, the interaction file) - eval must not leak them."""
    from export.build import build_bundle
    from export.demo import demo_catalog_path, demo_interactions_path

    work = tmp_path_factory.mktemp("eval-sample")
    catalog, events = _take_sample(Path(demo_catalog_path()), Path(demo_interactions_path()),
                                   work / "data", n_items=300)
    build_bundle(tiny_onnx_dir, catalog, events, work / "bundle", progress=False)
    return work / "bundle", events


def test_training_view_holds_no_held_out_event(sample):
    from export.bundle import FEATURES_DIR
    from export.features import InteractionFeatures, compute_features
    from server.served_bundle import ServedBundle
    from train.evaluation.protocol import leave_last_out
    from train.evaluation.training_view import (held_out_keys, load_bundle_events,
                                                training_interactions, with_training_tables)

    bundle_dir, interactions = sample
    bundle = ServedBundle.load(bundle_dir)
    events = load_bundle_events(bundle, interactions)
    cases = leave_last_out(events)
    held = held_out_keys(events, cases.training_events, bundle.catalog.item_ids)
    kept = training_interactions(interactions, held, bundle.catalog.label_of)
    view = with_training_tables(bundle, kept)

    assert len(kept) == int(cases.training_events.sum())
    # The shipped tables count every event; the view's come from exactly the training ones.
    shipped = InteractionFeatures.load(Path(bundle_dir) / FEATURES_DIR)
    assert shipped.popularity_count.sum() == len(events.labels)
    training = compute_features(kept, bundle.catalog)
    assert training.popularity_count.sum() == len(kept)
    np.testing.assert_array_equal(view.tables.popularity, training.popularity.astype(np.float32))
    assert not np.array_equal(view.tables.popularity, bundle.tables.popularity)
    # Each user's history in the view is their sequence minus the held-out last event.
    for u in cases.users[:50]:
        user = events.user_ids[u]
        lo, hi = events.starts[u], events.starts[u + 1]
        expected = events.labels[lo:hi - 1][-view.users.history_length:]
        np.testing.assert_array_equal(view.users.get(user).labels, expected)


def test_engine_recommender_answers_like_the_engine(sample):
    import asyncio

    from server.requests import RecommendQuery
    from server.served_bundle import ServedBundle
    from train.evaluation.engine_recommender import RETRIEVAL_ONLY, EngineRecommender, make_engine

    bundle = ServedBundle.load(sample[0])
    engine = make_engine(bundle)
    recommender = EngineRecommender("tiny", engine)
    history = np.asarray([3, 7, 11, 7], dtype=np.int64)
    ids = tuple(bundle.catalog.item_ids[i] for i in history)
    direct = asyncio.run(engine.recommend(RecommendQuery(history=ids, k=20)))
    got = recommender.recommend(history, 20)
    assert [bundle.catalog.item_ids[i] for i in got] == [item.item_id for item in direct.items]
    plain = EngineRecommender("plain", make_engine(bundle, RETRIEVAL_ONLY)).recommend(history, 20)
    assert len(plain) == 20 and not np.array_equal(plain, got)  # the reranker changes the order


def test_eval_cli_end_to_end(sample, tmp_path):
    from train import cli_eval

    bundle_dir, interactions = sample
    parser = argparse.ArgumentParser()
    cli_eval.add_arguments(parser)
    out = tmp_path / "eval"
    args = parser.parse_args([
        "--bundle", f"tiny={bundle_dir}", "--interactions", str(interactions),
        "--users", "300", "--baselines", "popularity,transitions", "--out", str(out), "--quiet"])
    assert cli_eval.run(args) == 0

    report = json.loads((out / "results.json").read_text())
    names = [r["name"] for r in report["results"]]
    assert names == ["popularity", "last-item transitions",
                     "tiny union + linear scorer (default weights)",
                     "tiny content only (retrieval score)", "tiny item_knn alone",
                     "tiny transitions alone", "tiny popular alone", "tiny trending alone",
                     "tiny repeat alone", "tiny cold_bridge alone"]
    assert report["setup"]["cases_evaluated"] == 300
    for row in report["results"]:
        m = row["metrics"]
        assert m["all"]["cases"] == 300
        assert m["warm_items"]["cases"] + m["cold_items"]["cases"] == 300
        assert 0 <= m["all"]["ndcg@10"] <= m["all"]["recall@10"] <= m["all"]["recall@50"] <= 1
    by_name = {r["name"]: r["metrics"] for r in report["results"]}
    # Collaborative baselines cannot reach items never seen in training.
    if by_name["popularity"]["cold_items"]["cases"]:
        assert by_name["popularity"]["cold_items"]["recall@50"] == 0
        assert by_name["last-item transitions"]["cold_items"]["recall@50"] == 0
    # Real purchase sequences: the next item after the last one beats plain popularity.
    assert by_name["last-item transitions"]["all"]["ndcg@10"] > by_name["popularity"]["all"]["ndcg@10"]
    # Each source alone finds at most what the union of the sources finds.
    recall = report["setup"]["candidate_recall"]["tiny"]["all"]
    assert recall["cases"] == 300
    assert all(recall[s] <= recall["union"] for s in ("content", "item_knn", "transitions",
                                                       "popular", "trending"))
    union = by_name["tiny union + linear scorer (default weights)"]["all"]["recall@50"]
    assert union <= recall["union"] + 1e-9  # ranking only orders the candidates
    assert (out / "results.png").stat().st_size > 10_000
    assert "| popularity |" in (out / "results.md").read_text()


def test_transition_baseline_follows_the_last_item():
    from train.data import EventSequences
    from train.evaluation.baselines import PopularityRecommender, TransitionRecommender

    # user 0: 0 1 2 ; user 1: 0 1 3 ; user 2: 2 3 1 (last event held out everywhere)
    labels = np.asarray([0, 1, 2, 0, 1, 3, 2, 3, 1])
    events = EventSequences(["a", "b", "c"], np.asarray([0, 3, 6, 9]), labels,
                            np.arange(9, dtype=np.float64))
    training = np.ones(9, bool)
    training[[2, 5, 8]] = False
    transitions = TransitionRecommender(events, training, n_items=4)
    assert transitions.recommend(np.asarray([0]), 2).tolist() == [1, 0]  # 0->1 twice; then popular
    assert transitions.recommend(np.asarray([2]), 1).tolist() == [3]
    popularity = PopularityRecommender(events, training, n_items=4)
    assert popularity.recommend(np.asarray([]), 4).tolist() == [0, 1, 2, 3]


def test_history_query_text_goes_through_the_batcher(sample):
    from server.served_bundle import ServedBundle
    from train.evaluation.engine_recommender import (EngineRecommender, bundle_item_texts,
                                                     history_query_text, make_engine)
    from train.pairs import QUERY_SEPARATOR

    bundle = ServedBundle.load(sample[0])
    texts = bundle_item_texts(bundle)
    history = np.asarray([4, 9, 4, 2], dtype=np.int64)
    # Newest distinct items first, joined as in fine-tuning.
    assert history_query_text(history, texts, 2) == QUERY_SEPARATOR.join([texts[2], texts[4]])
    with_text = EngineRecommender("text", make_engine(bundle, with_batcher=True), query_items=3)
    try:
        got = with_text.recommend_many([history, history[:1]], 15)
        assert all(len(g) == 15 for g in got)
        samples = with_text.engine.batcher.metrics.batch_size.collect()[0].samples
        batches = sum(s.value for s in samples if s.name.endswith("_count"))
        assert 1 <= batches <= 2  # both texts embedded by the batcher (one length bucket each)
        without = EngineRecommender("plain", make_engine(bundle)).recommend(history, 15)
        assert not np.array_equal(got[0], without)  # the query interest changes the answer
    finally:
        with_text.close()
