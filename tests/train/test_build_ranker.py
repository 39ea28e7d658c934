"""`recserve build` with interactions ships a learned ONNX ranker the server uses; without, the
linear scorer; and on a real sample the hybrid ranks the next item better than content alone."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from tests.server.conftest import _take_sample


def _build(args: list[str]) -> int:
    from train import build_with_ranker

    parser = argparse.ArgumentParser()
    build_with_ranker.add_arguments(parser)
    return build_with_ranker.run(parser.parse_args(args))


@pytest.fixture(scope="module")
def built(tiny_onnx_dir, tmp_path_factory) -> dict[str, Path]:
    """A demo sample, its leave-last-out training events, and bundles built with/without them."""
    from export.demo import demo_catalog_path, demo_interactions_path
    from train.data import load_events, load_items
    from train.evaluation.protocol import leave_last_out
    from train.evaluation.training_view import (held_out_keys, training_interactions,
                                                write_interactions)

    work = tmp_path_factory.mktemp("build-ranker")
    catalog, events_file = _take_sample(Path(demo_catalog_path()), Path(demo_interactions_path()),
                                        work / "data", n_items=300)
    # The ranker is fitted inside the build: give it the log without each user's last event,
    # so the evaluation below measures those events unseen.
    items = load_items(catalog)
    events = load_events(events_file, items)
    cases = leave_last_out(events)
    label_of = {item_id: i for i, item_id in enumerate(items.item_ids)}
    training = work / "data" / "training.csv.gz"
    write_interactions(training_interactions(
        events_file, held_out_keys(events, cases.training_events, items.item_ids), label_of),
        training)
    common = ["--encoder", str(tiny_onnx_dir), "--catalog", str(catalog), "--quiet"]
    assert _build(common + ["--interactions", str(training), "--out", str(work / "ranked"),
                            "--max-examples", "800", "--validation-examples", "400"]) == 0
    assert _build(common + ["--out", str(work / "content")]) == 0
    assert _build(common + ["--interactions", str(training), "--no-ranker",
                            "--out", str(work / "unranked")]) == 0
    return {"ranked": work / "ranked", "content": work / "content",
            "unranked": work / "unranked", "events": events_file, "work": work}


def test_bundle_built_with_interactions_carries_a_checksummed_ranker(built):
    from export.bundle import read_manifest
    from server.ranking.gbdt import GBDTRanker
    from server.served_bundle import ServedBundle
    from train.evaluation.engine_recommender import make_engine

    manifest = read_manifest(built["ranked"], verify=True)
    model = manifest["ranker"]["model"]
    assert model["file"] in manifest["files"] and model["sha256"] == manifest["files"][model["file"]]
    assert model["onnx_max_abs_diff"] <= 1e-5 and model["rounds"] >= 1
    assert "parent_version" not in manifest  # the staging bundle is nobody's parent
    assert not list(built["work"].glob(".ranked*"))  # no staging folder left behind
    engine = make_engine(ServedBundle.load(built["ranked"]))
    assert isinstance(engine.ranker, GBDTRanker)


@pytest.mark.parametrize("name", ["content", "unranked"])
def test_bundle_without_ranker_uses_the_linear_scorer(built, name):
    from export.bundle import read_manifest
    from server.served_bundle import ServedBundle
    from train.evaluation.engine_recommender import make_engine

    manifest = read_manifest(built[name], verify=True)
    assert "ranker" not in manifest and "ranker.onnx" not in manifest["files"]
    engine = make_engine(ServedBundle.load(built[name]))
    assert engine.ranker is engine.linear


def test_bundle_built_with_interactions_carries_its_history_adapter(built):
    import numpy as np

    from export.bundle import HISTORY_ADAPTER_FILE, read_manifest
    from server.served_bundle import ServedBundle

    manifest = read_manifest(built["ranked"], verify=True)
    section = manifest["history_adapter"]
    # the sample's next items are not what a random encoder's neighbours are: the map helps
    assert section["kept"] and section["held_out_loss"] < section["identity_held_out_loss"]
    assert section["file"] == HISTORY_ADAPTER_FILE and HISTORY_ADAPTER_FILE in manifest["files"]
    served = ServedBundle.load(built["ranked"])
    assert served.history_adapter.shape == (served.backend.dim, served.backend.dim)
    np.testing.assert_array_equal(served.history_adapter,
                                  np.load(built["ranked"] / HISTORY_ADAPTER_FILE))
    for name in ("content", "unranked"):
        assert "history_adapter" not in read_manifest(built[name]) and \
            ServedBundle.load(built[name]).history_adapter is None


@pytest.mark.parametrize("file", ["ranker.onnx", "history_adapter.npy"])
def test_tampered_ranker_or_adapter_is_refused(built, tmp_path, file):
    import shutil

    from export.errors import BundleError
    from server.served_bundle import ServedBundle

    copy = tmp_path / "tampered"
    shutil.copytree(built["ranked"], copy)
    tampered = copy / file
    data = tampered.read_bytes()
    tampered.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(BundleError):
        ServedBundle.load(copy)


def test_hybrid_with_learned_ranker_beats_content_only(built, tmp_path):
    from train import cli_eval

    parser = argparse.ArgumentParser()
    cli_eval.add_arguments(parser)
    out = tmp_path / "eval"
    args = parser.parse_args(["--bundle", f"tiny={built['ranked']}", "--interactions",
                              str(built["events"]), "--users", "0", "--baselines", "",
                              "--out", str(out), "--quiet"])
    assert cli_eval.run(args) == 0
    report = json.loads((out / "results.json").read_text())
    ndcg = {r["name"]: r["metrics"]["all"]["ndcg@10"] for r in report["results"]}
    recall50 = {r["name"]: r["metrics"]["all"]["recall@50"] for r in report["results"]}
    hybrid, content = "tiny union + learned ranker (trees)", "tiny content only (retrieval score)"
    assert ndcg[hybrid] > ndcg[content] and recall50[hybrid] > recall50[content]
    recall = report["setup"]["candidate_recall"]["tiny"]["all"]
    assert recall["union"] >= max(recall[s] for s in ("content", "item_knn", "transitions"))
    assert recall50[hybrid] <= recall["union"] + 1e-9  # a ranker only orders the candidates
