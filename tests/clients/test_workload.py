"""Load-test workloads: the committed default, the JSONL format, mixes, the Online Retail builder."""

from __future__ import annotations

import gzip
import json
import re
from importlib import resources

import numpy as np
import pytest

from clients.loadtest.retail import build_retail_workload, read_purchases
from clients.loadtest.workload import (
    DEFAULT_MIX, KINDS, Workload, WorkloadError, default_workload, load_workload, parse_mix,
    save_workload,
)
from protos import recommender_pb2 as pb

STOCK_CODE = re.compile(r"^\d{5}[A-Za-z]{0,2}$")


def test_default_workload_is_small_real_and_mixed_as_documented():
    packaged = resources.files("clients.loadtest") / "default_workload.jsonl.gz"
    assert len(packaged.read_bytes()) < 300_000
    workload = default_workload()
    assert workload.kind_shares() == pytest.approx(DEFAULT_MIX, abs=1e-3)
    by_kind = {k: [r for r, i in zip(workload.requests, workload.kinds) if KINDS[i] == k] for k in KINDS}
    assert len(by_kind["text"]) >= 1000 and len({r.query for r in by_kind["text"]}) >= 1000
    assert len(by_kind["user"]) >= 300
    assert all(re.fullmatch(r"\d{5}", r.user_id) for r in by_kind["user"])
    assert len(by_kind["history"]) >= 300
    for request in by_kind["history"]:
        assert 3 <= len(request.history) <= 20
        assert all(STOCK_CODE.match(item) for item in request.history)
    assert all(r.k == 10 for r in workload.requests)


def test_jsonl_round_trip_keeps_requests_and_weights(tmp_path):
    requests = [pb.RecommendRequest(query="white metal lantern", k=5),
                pb.RecommendRequest(user_id="17850", explain=True),
                pb.RecommendRequest(history=["85123A", "71053"], query="lantern")]
    workload = Workload.of(requests, [2.0, 1.0, 1.0], "test")
    path = tmp_path / "w.jsonl.gz"
    save_workload(workload, path)
    loaded = load_workload(path)
    assert list(loaded.requests) == requests
    assert loaded.weights == pytest.approx([0.5, 0.25, 0.25], rel=1e-3)
    assert [KINDS[i] for i in loaded.kinds] == ["text", "user", "mixed"]


def test_hand_written_file_weight_is_optional_and_errors_name_the_line(tmp_path):
    path = tmp_path / "w.jsonl"
    path.write_text('{"query": "red mug"}\n\n{"userId": "12346", "k": 3, "weight": 3}\n')
    workload = load_workload(path)
    assert workload.weights == pytest.approx([0.25, 0.75])
    assert workload.requests[1].user_id == "12346" and workload.requests[1].k == 3
    path.write_text('{"query": "red mug"}\n{"k": 3}\n')
    with pytest.raises(WorkloadError, match="at least one"):
        load_workload(path)
    path.write_text('{"query": "red mug"}\n{"colour": "red"}\n')
    with pytest.raises(WorkloadError, match=":2:"):
        load_workload(path)


def test_mix_reweights_kinds():
    workload = default_workload().with_mix(parse_mix("text=1,history=3"))
    assert workload.kind_shares() == pytest.approx({"text": 0.25, "user": 0.0, "history": 0.75}, abs=1e-6)
    with pytest.raises(WorkloadError, match="has none"):
        default_workload().with_mix({"mixed": 1.0})
    with pytest.raises(WorkloadError, match="unknown"):
        default_workload().with_mix({"images": 1.0})
    with pytest.raises(WorkloadError):
        parse_mix("text=abc")


CSV_ROWS = [
    # InvoiceNo, StockCode, Description, Quantity, InvoiceDate, UnitPrice, CustomerID, Country
    ("536365", "85123A", "WHITE HANGING HEART T-LIGHT HOLDER", "6", "2010-12-01T08:26:00Z", "2.55", "17850", "UK"),
    ("536365", "71053", "WHITE METAL LANTERN", "6", "2010-12-01T08:26:00Z", "3.39", "17850", "UK"),
    ("536366", "22633", "HAND WARMER UNION JACK", "6", "2010-12-01T08:28:00Z", "1.85", "17850.0", "UK"),
    ("536367", "71053", "WHITE LANTERN (OLD NAME)", "1", "2010-12-02T08:00:00Z", "3.39", "13047", "UK"),
    ("536368", "71053", "WHITE METAL LANTERN", "1", "2010-12-02T09:00:00Z", "3.39", "13047", "UK"),
    ("536368", "22960", "JAM MAKING SET WITH JARS", "1", "2010-12-02T09:00:00Z", "4.25", "13047", "UK"),
    ("536369", "84029G", "KNITTED UNION FLAG HOT WATER BOTTLE", "2", "2010-12-03T09:00:00Z", "3.39", "13047", "UK"),
    ("C536379", "22633", "HAND WARMER UNION JACK", "-1", "2010-12-03T10:00:00Z", "1.85", "13047", "UK"),
    ("536370", "POST", "POSTAGE", "3", "2010-12-03T11:00:00Z", "18.0", "13047", "UK"),
    ("536371", "BANK CHARGES", "Bank Charges", "1", "2010-12-03T11:00:00Z", "15.0", "13047", "UK"),
    ("536372", "22139", "", "5", "2010-12-03T12:00:00Z", "0", "13047", "UK"),
    ("536373", "21730", "GLASS STAR FROSTED T-LIGHT HOLDER", "-4", "2010-12-03T12:00:00Z", "4.25", "13047", "UK"),
    ("536374", "21754", "HOME BUILDING BLOCK WORD", "3", "2010-12-03T13:00:00Z", "5.95", "", "UK"),
]


def write_retail_csv(path):
    """A tiny Online Retail file holding each kind of row the loader must handle."""
    with gzip.open(path, "wt", newline="") as out:
        out.write("InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n")
        for row in CSV_ROWS:
            out.write(",".join(f'"{v}"' if "," in v else v for v in row) + "\n")
    return path


@pytest.fixture
def retail_csv(tmp_path):
    return write_retail_csv(tmp_path / "online_retail.csv.gz")


def test_retail_reader_drops_what_the_data_readme_warns_about(retail_csv):
    names, histories = read_purchases(retail_csv, seed=0)
    assert set(names) == {"85123A", "71053", "22633", "22960", "84029G", "21754"}  # guest row's item kept
    assert names["71053"] == "WHITE METAL LANTERN"  # most common description wins
    assert set(histories) == {"17850", "13047"}  # "17850.0" is the same customer; guests have none
    assert histories["17850"][-1] == "22633"
    assert histories["13047"][-1] == "84029G"
    assert set(histories["13047"][-3:-1]) == {"71053", "22960"}  # same invoice: order is a seeded shuffle
    assert "POST" not in histories["13047"] and "21730" not in histories["13047"]


def test_retail_tie_order_is_seeded_not_file_order(retail_csv):
    orders = {tuple(read_purchases(retail_csv, seed=s)[1]["13047"]) for s in range(12)}
    assert len(orders) > 1
    assert read_purchases(retail_csv, seed=3) == read_purchases(retail_csv, seed=3)


def test_retail_workload_has_every_kind_in_the_mix(retail_csv):
    workload = build_retail_workload(retail_csv, n_text=4, n_users=2, n_histories=2)
    assert workload.kind_shares() == pytest.approx(DEFAULT_MIX)
    users = {r.user_id for r in workload.requests if r.user_id}
    assert users == {"17850", "13047"}
    histories = [list(r.history) for r in workload.requests if r.history]
    assert histories and all(len(h) >= 3 for h in histories)
    texts = [r.query for r in workload.requests if r.query]
    assert len(texts) == 4 and all(t.strip() for t in texts)
    assert np.isclose(workload.weights.sum(), 1.0)
    json.dumps(workload.summary())  # report-ready


def test_the_documented_format_example_loads_and_the_data_is_attributed(tmp_path):
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "LOADTEST.md").read_text()
    example = re.search(r"```json\n(.+?)```", doc, flags=re.S).group(1)
    path = tmp_path / "example.jsonl"
    path.write_text(example)
    workload = load_workload(path)
    assert [KINDS[i] for i in workload.kinds] == ["text", "user", "history", "mixed"]
    assert workload.requests[3].filter.exclude_item_ids == ["22632"]
    assert "Daqing Chen" in doc and "CC BY 4.0" in doc


def test_default_workload_names_only_items_and_users_of_the_demo_catalog():
    """A stale default file (demo catalog rebuilt) would make the server refuse its requests."""
    from export.demo import demo_catalog_path, demo_interactions_path

    from clients.loadtest.retail import read_ids

    items, users = read_ids(demo_catalog_path(), "item_id"), read_ids(demo_interactions_path(), "user_id")
    workload = default_workload()
    assert all(set(r.history) <= items for r in workload.requests)
    assert all(r.user_id in users for r in workload.requests if r.user_id)


def test_retail_workload_restricted_to_known_items_and_users(retail_csv):
    workload = build_retail_workload(retail_csv, n_text=10, n_users=5, n_histories=5,
                                     known_items={"71053", "22960", "84029G", "85123A"},
                                     known_users={"13047"})
    assert {r.user_id for r in workload.requests if r.user_id} == {"13047"}
    assert all(set(r.history) <= {"71053", "22960", "84029G", "85123A"} for r in workload.requests)
    texts = {r.query.upper() for r in workload.requests if r.query}
    assert not any("HAND WARMER" in t or "BUILDING BLOCK" in t for t in texts)
    assert "restricted" in workload.source
