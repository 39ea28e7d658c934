"""Natural-language query pairs: reading, the time split, and training with them."""

from __future__ import annotations

import json

import pytest

from clients.cli import main
from export.catalog import ValidationReport
from export.errors import InvalidInput
from tests.train import synthetic
from train.queries import QueryColumns, read_query_pairs, split_query_pairs

COLUMNS = "query=search_terms,timestamp=ts"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("shop")
    catalog, interactions = synthetic.write_shop(root)
    return catalog, interactions, synthetic.write_csv_gz(root / "queries.csv.gz", synthetic.queries())


def _label_of():
    return {it["item_id"]: i for i, it in enumerate(synthetic.items())}


def test_reads_valid_rows_and_reports_the_rest(files):
    report = ValidationReport("queries")
    pairs = read_query_pairs(files[2], _label_of(), QueryColumns.parse(COLUMNS), report)
    assert len(pairs) == 48 * 4
    assert dict(report.problems) == {"empty_query": 1, "unknown_item": 1, "bad_timestamp": 1}
    first = synthetic.queries()[0]
    assert pairs[0].text == first["search_terms"] and pairs[0].history == ()
    assert pairs[0].target == _label_of()[first["item_id"]]
    with pytest.raises(InvalidInput, match="--query-columns"):
        read_query_pairs(files[2], _label_of())  # default column names are not in this file


def test_split_is_by_time_and_ignores_file_order(files):
    pairs = read_query_pairs(files[2], _label_of(), QueryColumns.parse(COLUMNS))
    cutoff = sorted(p.timestamp for p in pairs)[len(pairs) // 2]
    past = split_query_pairs(pairs, end=cutoff, seed=0)
    future = split_query_pairs(pairs, start=cutoff, seed=0)
    assert len(past) + len(future) == len(pairs)
    assert all(p.timestamp < cutoff for p in past) and all(p.timestamp >= cutoff for p in future)
    assert split_query_pairs(list(reversed(pairs)), end=cutoff, seed=0) == past
    assert split_query_pairs(pairs, start=cutoff, limit=5, seed=0) == future[:5]


def test_training_with_queries_reports_query_recall(files, tiny_encoder_dir, tmp_path):
    catalog, interactions, queries = files
    out = tmp_path / "model"
    assert main(["train", "--catalog", str(catalog), "--interactions", str(interactions),
                 "--queries", str(queries), "--query-columns", COLUMNS,
                 "--base", str(tiny_encoder_dir), "--out", str(out), "--epochs", "2",
                 "--batch-size", "16", "--pairs-per-epoch", "256", "--lr", "1e-3",
                 "--validation-fraction", "0.2", "--threads", "1"]) == 0
    record = json.loads((out / "training.json").read_text())
    split = record["split"]
    assert split["train_query_pairs"] > 0 and split["validation_query_pairs"] > 0
    before, after = record["epochs"][0]["validation"], record["epochs"][-1]["validation"]
    assert before["query_pairs"] == split["validation_query_pairs"]
    assert after["recall_queries"] > before["recall_queries"]
    assert record["input_reports"]["queries"]["problems"] == {
        "bad_timestamp": 1, "empty_query": 1, "unknown_item": 1}
