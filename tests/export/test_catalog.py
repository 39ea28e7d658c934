import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from export.catalog import (CatalogColumns, InteractionColumns, ValidationReport, read_catalog,
                            read_interactions)
from export.errors import InvalidInput
from export.item_store import ItemRecord
from export.item_text import item_text
from export.tabular import row_count_upper_bound

ROWS = [
    {"item_id": "A1", "title": "Red mug", "text": "A big red mug", "brand": "Acme",
     "created_at": "2011-01-02T03:04:05Z"},
    {"item_id": "B2", "title": "Blue plate", "text": "", "brand": "", "created_at": "1293937445"},
    {"item_id": "C3", "title": "Green bowl", "text": "Bowl, green", "brand": "Bolt",
     "created_at": ""},
]
EXPECTED = [
    ItemRecord("A1", "Red mug", "A big red mug", {"brand": "Acme"}, 1293937445.0),
    ItemRecord("B2", "Blue plate", "", {}, 1293937445.0),
    ItemRecord("C3", "Green bowl", "Bowl, green", {"brand": "Bolt"}, None),
]


def write_csv(path, rows, names=None, opener=open):
    names = names or list(rows[0])
    with opener(path, "wt", newline="") as fh:
        import csv

        writer = csv.writer(fh)
        writer.writerow(names)
        for row in rows:
            writer.writerow([row.get(n, "") for n in names] if isinstance(row, dict) else row)
    return path


def write_jsonl(path, rows, opener=open):
    with opener(path, "wt") as fh:
        for row in rows:
            fh.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


def test_csv_jsonl_parquet_and_gzip_give_the_same_items(tmp_path):
    paths = [
        write_csv(tmp_path / "c.csv", ROWS),
        write_csv(tmp_path / "c.csv.gz", ROWS, opener=gzip.open),
        write_jsonl(tmp_path / "c.jsonl", ROWS),
        write_jsonl(tmp_path / "c.jsonl.gz", ROWS, opener=gzip.open),
    ]
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "c.parquet")
    paths.append(tmp_path / "c.parquet")
    for path in paths:
        report = ValidationReport(str(path))
        assert list(read_catalog(path, report=report)) == EXPECTED, path
        assert (report.rows_read, report.rows_kept, dict(report.problems)) == (3, 3, {})
        assert row_count_upper_bound(path) >= 3


def test_parquet_native_types_become_strings_and_times(tmp_path):
    import datetime as dt

    table = pa.table({"item_id": [7, 8], "title": ["x", "y"], "price": [2.5, 3.0],
                      "created_at": [dt.datetime(2011, 1, 2, 3, 4, 5), None]})
    pq.write_table(table, tmp_path / "n.parquet")
    items = list(read_catalog(tmp_path / "n.parquet"))
    assert [i.item_id for i in items] == ["7", "8"]
    assert items[0].attributes == {"price": "2.5"} and items[1].attributes == {"price": "3"}
    assert items[0].created_at == 1293937445.0 and items[1].created_at is None


def test_column_mapping_and_attribute_selection(tmp_path):
    rows = [{"sku": "A1", "name": "Red mug", "body": "big", "brand": "Acme", "colour": "red"}]
    path = write_csv(tmp_path / "m.csv", rows)
    columns = CatalogColumns.parse("item_id=sku,title=name,text=body,attributes=colour")
    assert list(read_catalog(path, columns)) == [ItemRecord("A1", "Red mug", "big", {"colour": "red"})]
    with pytest.raises(InvalidInput, match="missing required column.*--catalog-columns"):
        list(read_catalog(path))
    with pytest.raises(InvalidInput, match="bad column mapping"):
        CatalogColumns.parse("id=sku")


def test_bad_catalog_rows_are_counted_with_examples_and_strict_fails(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(
        "item_id,title,text,created_at\n"
        "A,Mug,,2011-01-01\n"
        "A,Mug again,,\n"          # duplicate id
        ",No id,,\n"               # missing id
        "B,,,\n"                   # no title, no text
        "C,Cup,,yesterday\n"       # bad created_at: kept, time unknown
        "D,Too,many,fields,here\n"  # malformed
        "\"E,unterminated\n"
    )
    report = ValidationReport(str(path))
    items = list(read_catalog(path, report=report))
    assert [i.item_id for i in items] == ["A", "C"]
    assert items[1].created_at is None
    assert dict(report.problems) == {"duplicate_id": 1, "missing_id": 1, "empty_text": 1,
                                     "bad_created_at": 1, "malformed": 2}
    assert report.examples["duplicate_id"] == ["row 2: 'A' already at row 1"]
    assert report.rows_read == 7 and report.rows_kept == 2
    summary = report.as_dict()
    assert summary["problems"]["malformed"] == 2 and "examples" in summary
    with pytest.raises(InvalidInput, match=r"row 2: duplicate_id.*--strict"):
        list(read_catalog(path, report=ValidationReport(str(path), strict=True)))


def test_malformed_jsonl_lines_are_reported(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl",
                       [{"item_id": "A", "title": "x"}, "{not json", "[1, 2]", {"item_id": "B", "title": "y"}])
    report = ValidationReport(str(path))
    assert [i.item_id for i in read_catalog(path, report=report)] == ["A", "B"]
    assert report.problems["malformed"] == 2


def test_unknown_file_type_and_missing_file_are_errors(tmp_path):
    (tmp_path / "c.xlsx").write_text("x")
    with pytest.raises(InvalidInput, match="unknown file type"):
        list(read_catalog(tmp_path / "c.xlsx"))
    with pytest.raises(InvalidInput, match="no such file"):
        list(read_catalog(tmp_path / "nope.csv"))


def test_interactions_parse_iso_seconds_and_milliseconds(tmp_path):
    path = write_csv(tmp_path / "i.csv", [
        {"user_id": "u1", "item_id": "A1", "timestamp": "2011-01-02T03:04:05Z", "event": "View",
         "weight": ""},
        {"user_id": "u1", "item_id": "B2", "timestamp": "1293937445", "event": "", "weight": "2"},
        {"user_id": "u2", "item_id": "A1", "timestamp": "1293937445000", "event": "click",
         "weight": "0.5"},
        {"user_id": "u2", "item_id": "A1", "timestamp": "2011-01-02 03:04:05", "event": "",
         "weight": "1"},
    ])
    events = list(read_interactions(path))
    assert {e.timestamp for e in events} == {1293937445.0}
    assert [(e.event, e.weight) for e in events] == [("view", 1.0), ("purchase", 2.0),
                                                     ("click", 0.5), ("purchase", 1.0)]


def test_bad_interactions_are_counted_and_mapping_works(tmp_path):
    path = write_csv(tmp_path / "i.csv", [
        {"customer": "u1", "sku": "A1", "ts": "1293937445000"},
        {"customer": "u1", "sku": "ZZ", "ts": "1293937445000"},      # unknown item
        {"customer": "", "sku": "A1", "ts": "1293937445000"},        # no user
        {"customer": "u2", "sku": "A1", "ts": "not a time"},        # bad timestamp
    ])
    columns = InteractionColumns.parse("user_id=customer,item_id=sku,timestamp=ts,timestamp_unit=ms")
    report = ValidationReport(str(path))
    events = list(read_interactions(path, columns, report, known_items={"A1": 0}))
    assert [(e.user_id, e.item_id, e.timestamp) for e in events] == [("u1", "A1", 1293937445.0)]
    assert dict(report.problems) == {"unknown_item": 1, "missing_id": 1, "bad_timestamp": 1}
    assert "ZZ" in report.examples["unknown_item"][0]
    weights = write_csv(tmp_path / "w.csv", [
        {"user_id": "u", "item_id": "A1", "timestamp": "1", "weight": "-1"},
        {"user_id": "u", "item_id": "A1", "timestamp": "1", "weight": "lots"},
    ])
    report = ValidationReport(str(weights))
    assert list(read_interactions(weights, report=report)) == []
    assert report.problems["bad_weight"] == 2
    with pytest.raises(InvalidInput, match="unknown_item"):
        list(read_interactions(path, columns, ValidationReport(str(path), strict=True),
                               known_items={"A1": 0}))


def test_item_text_template():
    attrs = {"colour": "red", "brand": "Acme", "price": "2.55", "empty": ""}
    assert item_text("Red  mug", "A big\nred mug", attrs) == \
        "Red mug. A big red mug | brand: Acme; colour: red"
    # attribute order in the source never changes the text; numeric values are left out
    assert item_text("Red mug", "", dict(reversed(list(attrs.items())))) == \
        "Red mug | brand: Acme; colour: red"
    assert item_text("Mug", "Mug") == "Mug"
    assert item_text("", "Only text") == "Only text"
    assert item_text("Mug", "", attrs, include=["colour"]) == "Mug | colour: red"
    assert item_text("Mug", "", {"price_band": "2-5"}) == "Mug | price_band: 2-5"
    assert len(item_text("x" * 10_000)) == 2048
