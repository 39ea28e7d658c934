"""The held-out probe and the quality comparison, on real bundles built from the demo sample."""

from __future__ import annotations

import pytest

from clients.release.probe import held_out_case, probe_from_events, read_probe
from clients.release.quality import QualityVerdict, RetrievalQuality, measure_bundle
from tests.clients.release_support import build_release_bundle, make_release_data


def test_the_target_is_the_last_new_item_and_history_the_distinct_items_before_it():
    case = held_out_case("u", ["a", "b", "a", "c", "b"], history_length=20)
    assert (case.target, case.history) == ("c", ("b", "a"))  # "b" again is a repeat, not a target
    assert held_out_case("u", ["a", "a", "a"], history_length=20) is None
    assert held_out_case("u", ["a"], history_length=20) is None
    long = held_out_case("u", [f"i{n}" for n in range(30)], history_length=5)
    assert long.target == "i29" and long.history == ("i24", "i25", "i26", "i27", "i28")


def test_the_probe_is_seeded_and_does_not_depend_on_file_order():
    # one invoice (same timestamp) of 4 items per user, then one later item
    events = [(f"u{u}", f"item{u}-{i}", 100.0) for u in range(50) for i in range(4)]
    events += [(f"u{u}", f"later{u}", 200.0) for u in range(50)]
    probe = probe_from_events(events, users=20, seed=3)
    again = probe_from_events(list(reversed(events)), users=20, seed=3)
    assert probe.cases == again.cases and len(probe.cases) == 20 and probe.eligible_users == 50
    assert all(c.target.startswith("later") and len(c.history) == 4 for c in probe.cases)
    # the order inside an invoice comes from the seed, not from the file
    invoice_only = [e for e in events if e[2] == 100.0]
    orders = {probe_from_events(invoice_only, seed=s).cases for s in range(4)}
    assert len(orders) > 1
    assert probe_from_events(invoice_only, seed=1).cases == probe_from_events(
        list(reversed(invoice_only)), seed=1).cases


@pytest.fixture(scope="module")
def bundles(tiny_onnx_dir, tmp_path_factory):
    """The same encoder over the demo sample, with correct titles and with shuffled titles."""
    work = tmp_path_factory.mktemp("quality")
    data = make_release_data(work / "data")
    good = build_release_bundle(tiny_onnx_dir, data.catalog, data.interactions, work / "good")
    scrambled = build_release_bundle(tiny_onnx_dir, data.scrambled_catalog, data.interactions,
                                     work / "scrambled")
    return data, good, scrambled


def test_titles_that_describe_the_items_retrieve_held_out_purchases_better(bundles):
    data, good, scrambled = bundles
    from export.item_store import ItemStore

    with ItemStore.open(good / "items.sqlite", readonly=True) as store:
        known = set(store.catalog().item_ids)
    probe = read_probe(data.interactions, known, seed=0)
    assert len(probe.cases) > 300
    good_quality = measure_bundle(good, probe)
    scrambled_quality = measure_bundle(scrambled, probe)
    assert good_quality.cases == scrambled_quality.cases == len(probe.cases)
    assert good_quality.target_missing == good_quality.history_missing == 0
    # even a random tiny encoder groups similar product names; shuffled titles are chance
    chance = 10 / len(known)
    assert scrambled_quality.recall < 2.5 * chance
    assert good_quality.recall > scrambled_quality.recall + 0.05
    assert measure_bundle(good, probe) == good_quality  # deterministic

    verdict = QualityVerdict(scrambled_quality, good_quality, "v1", 0.02, probe.describe())
    assert verdict.worse and verdict.regression > 0.05
    assert not QualityVerdict(good_quality, scrambled_quality, "v1", 0.02, probe.describe()).worse


def test_items_missing_from_an_older_bundle_are_misses_for_it(bundles):
    data, good, _ = bundles
    probe = probe_from_events([("u1", "10002", 1.0), ("u1", "NEW-ITEM", 2.0),
                               ("u2", "NEW-A", 1.0), ("u2", "10002", 2.0)])
    quality = measure_bundle(good, probe)
    assert (quality.cases, quality.hits, quality.target_missing, quality.history_missing) == (2, 0, 1, 1)


def test_the_verdict_allows_a_drop_up_to_max_regression():
    def q(hits):
        return RetrievalQuality(10, 100, hits, 0, 0)

    assert not QualityVerdict(q(28), q(30), "v1", 0.02, {}).worse   # -0.02: allowed
    assert QualityVerdict(q(27), q(30), "v1", 0.02, {}).worse       # -0.03: refused
    assert not QualityVerdict(q(27), None, None, 0.02, {}).worse    # nothing to compare with
    assert "no published release" in QualityVerdict(q(27), None, None, 0.02, {}).summary()
