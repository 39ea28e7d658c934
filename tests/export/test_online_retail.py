import csv
import gzip
import os
import random
from pathlib import Path

import pytest

from clients.cli import main as recserve
from export.catalog import ValidationReport, read_catalog, read_interactions
from export.demo import demo_catalog_path, demo_interactions_path
from export.online_retail import derive, write_tables

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
RAW_ROWS = [
    # invoice 1: three items, one timestamp, customer 17850
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6.0,2010-12-01T08:26:00Z,2.55,17850,United Kingdom",
    "536365,71053,WHITE METAL LANTERN,6.0,2010-12-01T08:26:00Z,3.39,17850,United Kingdom",
    "536365,84406B,CREAM CUPID HEARTS COAT HANGER,8.0,2010-12-01T08:26:00Z,2.75,17850,United Kingdom",
    "536365,POST,POSTAGE,1.0,2010-12-01T08:26:00Z,18.0,17850,United Kingdom",           # non-product
    # invoice 2: another description for 85123A, an empty description, a guest row
    "536370,85123A,CREAM HANGING HEART T-LIGHT HOLDER,2.0,2010-12-02T09:00:00Z,2.95,,France",  # guest
    "536371,85123A,,1.0,2010-12-03T10:00:00Z,2.65,13047,United Kingdom",                 # empty desc
    "536371,71053,WHITE METAL LANTERN,1.0,2010-12-03T10:00:00Z,3.39,13047,United Kingdom",
    "536371,M,Manual,1.0,2010-12-03T10:00:00Z,0.5,13047,United Kingdom",               # non-product
    "536371,gift_0001_10,Dotcomgiftshop Gift Voucher £10.00,1.0,2010-12-03T10:00:00Z,8.5,13047,United Kingdom",
    # cancellations, returns and stock adjustments never count
    "C536379,71053,WHITE METAL LANTERN,-1.0,2010-12-04T10:00:00Z,3.39,13047,United Kingdom",
    "536380,84406B,damaged,-5.0,2010-12-04T11:00:00Z,0.0,,United Kingdom",
    "536381,84406B,check,3.0,2010-12-04T11:00:00Z,0.0,,United Kingdom",
    "536382,99999,,4.0,2010-12-04T11:00:00Z,1.0,13047,United Kingdom",                  # never described
    # a later sale of 85123A, white again: most frequent non-empty description wins
    "536390,85123A,WHITE HANGING HEART T-LIGHT HOLDER,1.0,2010-12-05T10:00:00Z,2.55,13047,United Kingdom",
    "536390,21730,GLASS STAR FROSTED T-LIGHT HOLDER,1.0,2010-12-05T10:00:00Z,4.25,13047,United Kingdom",
]


def write_raw(path, rows):
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join([HEADER, *rows]) + "\n")
    return path


def test_derivation_handles_every_trap(tmp_path):
    tables = derive(write_raw(tmp_path / "raw.csv.gz", RAW_ROWS))
    items = {it["item_id"]: it for it in tables.items}
    assert sorted(items) == ["21730", "71053", "84406B", "85123A"]  # no POST, M, voucher, 99999
    assert items["85123A"]["title"] == "WHITE HANGING HEART T-LIGHT HOLDER"
    assert items["85123A"]["price"] == "2.60"  # median of 2.55, 2.95, 2.65, 2.55
    assert items["85123A"]["price_band"] == "2-5"
    assert items["85123A"]["created_at"] == 1291191960  # first sale, 2010-12-01T08:26Z
    assert items["84406B"]["title"] == "CREAM CUPID HEARTS COAT HANGER"  # not 'damaged'/'check'
    report = tables.report
    assert report["cancellation_rows"] == 1 and report["non_positive_quantity_rows"] == 1
    assert report["zero_price_rows"] == 1 and report["guest_sale_rows"] == 1
    assert report["excluded_codes"] == {"POST": 1, "M": 1, "gift_0001_10": 1}
    assert report["empty_description_sale_rows"] == 2 and report["codes_without_description"] == 1
    assert report["interactions_of_undescribed_codes"] == 1
    # purchases: known customers' sale rows of catalog items only
    events = list(zip(tables.users, tables.item_ids))
    assert sorted(events) == sorted([
        ("17850", "85123A"), ("17850", "71053"), ("17850", "84406B"),
        ("13047", "85123A"), ("13047", "71053"), ("13047", "85123A"), ("13047", "21730"),
    ])
    assert report["customers"] == 2 and report["interactions"] == 7
    # sorted by user then time
    pairs = list(zip(tables.users, tables.timestamps.tolist()))
    assert pairs == sorted(pairs)


def test_order_within_an_invoice_is_seeded_not_file_order(tmp_path):
    rows = [f"5{k:05d},{20000 + j},ITEM {j},1.0,2011-01-0{1 + k % 5}T10:00:00Z,1.5,1{k % 3:04d},UK"
            for k in range(15) for j in range(8)]
    base = derive(write_raw(tmp_path / "a.csv.gz", rows), seed=0)
    shuffled = rows[:]
    random.Random(3).shuffle(shuffled)
    again = derive(write_raw(tmp_path / "b.csv.gz", shuffled), seed=0)
    assert base.item_ids.tolist() == again.item_ids.tolist()
    assert base.users.tolist() == again.users.tolist()
    # customer 10000's first invoice (file order 20000..20007) comes first, reordered
    first_invoice = [f"{20000 + j}" for j in range(8)]
    assert base.users[:8].tolist() == ["10000"] * 8
    assert base.item_ids[:8].tolist() != first_invoice
    assert sorted(base.item_ids[:8].tolist()) == first_invoice
    other_seed = derive(write_raw(tmp_path / "a.csv.gz", rows), seed=1)
    assert other_seed.item_ids.tolist() != base.item_ids.tolist()


def test_sampling_customers_keeps_only_their_items(tmp_path):
    tables = derive(write_raw(tmp_path / "raw.csv.gz", RAW_ROWS), max_customers=1, seed=0)
    assert len(set(tables.users)) == 1
    assert {it["item_id"] for it in tables.items} == set(tables.item_ids)


def test_written_files_read_back_cleanly_through_the_generic_readers(tmp_path):
    tables = derive(write_raw(tmp_path / "raw.csv.gz", RAW_ROWS))
    for fmt in ("csv", "parquet"):
        paths = write_tables(tables, tmp_path / fmt, fmt)
        report = ValidationReport("catalog")
        items = list(read_catalog(paths["catalog"], report=report))
        assert [i.item_id for i in items] == [it["item_id"] for it in tables.items]
        assert items[0].attributes == {"price": "4.25", "price_band": "2-5"}
        assert items[0].created_at == 1291543200.0
        label_of = {it.item_id: k for k, it in enumerate(items)}
        interactions = ValidationReport("interactions")
        events = list(read_interactions(paths["interactions"], report=interactions,
                                        known_items=label_of))
        assert len(events) == 7 and not report.problems and not interactions.problems
        assert "CC BY 4.0" in paths["readme"].read_text()


def test_cli_writes_catalog_interactions_and_readme(tmp_path, capsys):
    source = write_raw(tmp_path / "raw.csv.gz", RAW_ROWS)
    assert recserve(["data", "online-retail", "--source", str(source), "--out",
                     str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == \
        ["README.md", "catalog.csv.gz", "interactions.csv.gz"]
    assert recserve(["data", "online-retail", "--source", str(tmp_path / "missing.csv.gz"),
                     "--out", str(tmp_path / "x")]) == 2
    (tmp_path / "junk.csv").write_text("a,b\n1,2\n")
    assert recserve(["data", "online-retail", "--source", str(tmp_path / "junk.csv"),
                     "--out", str(tmp_path / "y")]) == 2
    assert "Online Retail" in capsys.readouterr().err


def test_committed_demo_sample_is_small_clean_and_attributed():
    catalog, interactions = demo_catalog_path(), demo_interactions_path()
    assert catalog.stat().st_size + interactions.stat().st_size < 1_000_000
    readme = (catalog.parent / "README.md").read_text()
    assert "CC BY 4.0" in readme and "Daqing Chen" in readme and "--max-customers 1000" in readme
    report = ValidationReport("demo catalog", strict=True)
    label_of = {item.item_id: k for k, item in enumerate(read_catalog(catalog, report=report))}
    assert 1000 <= len(label_of) <= 5000
    strict = ValidationReport("demo interactions", strict=True)
    users = {e.user_id for e in read_interactions(interactions, report=strict, known_items=label_of)}
    assert len(users) == 1000 and strict.rows_kept > 50_000


REAL_SOURCE = Path(os.environ.get(
    "RECSERVE_ONLINE_RETAIL",
    Path(__file__).resolve().parents[2] / "../shared/data/online-retail/online_retail.csv.gz"))


def raw_rows_from_demo_sample(out: Path) -> Path:
    """The committed demo sample written back as Online Retail rows (its invoices, quantities,
    timestamps, titles and prices): stands in for the real file where that is not available."""
    with gzip.open(demo_catalog_path(), "rt", newline="") as fh:
        catalog = {row["item_id"]: row for row in csv.DictReader(fh)}
    with gzip.open(demo_interactions_path(), "rt", newline="") as fh, \
            gzip.open(out, "wt", newline="") as raw:
        writer = csv.writer(raw)
        writer.writerow(HEADER.split(","))
        for row in csv.DictReader(fh):
            item = catalog[row["item_id"]]
            writer.writerow([row["invoice"], row["item_id"], item["title"], row["quantity"], row["timestamp"],
                             item["price"], row["user_id"], "United Kingdom"])
    return out


def test_derive_reproduces_the_committed_demo_sample(tmp_path):
    if REAL_SOURCE.is_file():
        tables = derive(REAL_SOURCE, max_customers=1000, seed=0)
        report = tables.report
        # the README's figures for the whole file
        assert report["rows"] == 541_909 and report["cancellation_rows"] == 9_288
        assert {"POST", "M", "DOT", "BANK CHARGES", "C2", "PADS", "AMAZONFEE"} <= set(report["excluded_codes"])
        paths = write_tables(tables, tmp_path)
        assert paths["catalog"].read_bytes() == demo_catalog_path().read_bytes()
        assert paths["interactions"].read_bytes() == demo_interactions_path().read_bytes()
        return
    # Without the real file: the demo sample itself, round-tripped through derive().
    paths = write_tables(derive(raw_rows_from_demo_sample(tmp_path / "raw.csv.gz"), max_customers=1000, seed=0),
                         tmp_path / "out")
    assert gzip.decompress(paths["interactions"].read_bytes()) == \
        gzip.decompress(demo_interactions_path().read_bytes())
    with gzip.open(paths["catalog"], "rt") as got, gzip.open(demo_catalog_path(), "rt") as want:
        got_rows, want_rows = list(csv.DictReader(got)), list(csv.DictReader(want))
    assert len(got_rows) == len(want_rows)
    for g, w in zip(got_rows, want_rows):
        # created_at is an item's first sale in the whole file: the sample can only see it later
        assert {k: v for k, v in g.items() if k != "created_at"} == {k: v for k, v in w.items() if k != "created_at"}
        assert w["created_at"] <= g["created_at"]


def test_unconvertible_values_are_an_input_error_not_a_crash(tmp_path):
    from export.errors import InvalidInput

    rows = RAW_ROWS[:2] + ["536365,71053,LANTERN,1.0,not-a-date,3.39,17850,United Kingdom"]
    with pytest.raises(InvalidInput, match="Online Retail.*not-a-date"):
        derive(write_raw(tmp_path / "raw.csv.gz", rows))
