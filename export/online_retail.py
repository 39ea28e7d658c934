"""UCI Online Retail (transactions) -> a generic catalog and interaction log.

Rules (the traps are documented in the data's README):
- A sale row: invoice not starting with 'C' (cancellation), Quantity > 0 (returns and
  corrections are non-positive) and UnitPrice > 0 (stock adjustments like 'check',
  'damaged', 'found' are priced 0). Only sale rows count as purchases.
- Product codes are five digits with an optional letter suffix (85123A); POST, M, DOT,
  BANK CHARGES, C2, PADS, AMAZONFEE, CRUK, D, S, B, gift vouchers and the DCGS dotcom
  listings are not, and are excluded (counted per code in the report).
- One item per product code: title = most frequent non-empty description among its sales
  (ties: alphabetical), attributes price (median unit price) and price_band,
  created_at = first sale. A code with no described sale is dropped.
- Interactions: one per sale row with a CustomerID (guest rows are excluded).
- Rows of one invoice share a timestamp, so the file is ordered by (user, time, seeded
  pseudo-random key) - the same key features.py uses - never by the source's row order.

The source is streamed in record batches; only per-code aggregates and the interaction
columns (as numpy arrays) are kept.
"""

from __future__ import annotations

import re
import statistics
import zlib
from array import array
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from export.bundle import sha256_file
from export.errors import InvalidInput
from export.features import tie_break_keys

ATTRIBUTION = (
    "Derived from the Online Retail data set: Daqing Chen, Sai Liang Sain and Kun Guo, "
    '"Data mining for the online retail industry: A case study of RFM model-based customer '
    'segmentation using data mining", Journal of Database Marketing and Customer Strategy '
    "Management 19(3), 2012. Published by the UCI Machine Learning Repository under CC BY 4.0; "
    "converted from the R package onlineretail 0.1.2 (CC0, included with the donor's "
    "permission). Keep this attribution with any copy or derived subset."
)
PRODUCT_CODE = re.compile(r"^\d{5}[A-Za-z]*$")
PRICE_BANDS = ((1.0, "under 1"), (2.0, "1-2"), (5.0, "2-5"), (10.0, "5-10"), (20.0, "10-20"))
COLUMNS = ("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice",
           "CustomerID", "Country")


def price_band(price: float) -> str:
    """A coarse GBP price band: a categorical attribute for affinity features."""
    for upper, name in PRICE_BANDS:
        if price < upper:
            return name
    return "20 and over"


@dataclass
class RetailTables:
    """The derived catalog and interaction log, column-wise, plus the derivation report."""

    items: list[dict[str, Any]]
    users: np.ndarray        # object array of customer ids, one per interaction
    item_ids: np.ndarray     # object array of stock codes
    timestamps: np.ndarray   # int64 epoch seconds
    quantities: np.ndarray   # float64
    invoices: np.ndarray     # int64 invoice numbers
    report: dict[str, Any] = field(default_factory=dict)


def _open_batches(source: Path):
    import pyarrow as pa
    import pyarrow.csv as pacsv

    types = {"InvoiceNo": pa.string(), "StockCode": pa.string(), "Description": pa.string(),
             "Quantity": pa.float64(), "InvoiceDate": pa.timestamp("s", tz="UTC"),
             "UnitPrice": pa.float64(), "CustomerID": pa.string(), "Country": pa.string()}
    try:
        stream = pa.input_stream(str(source), compression="detect")
        reader = pacsv.open_csv(
            stream, read_options=pacsv.ReadOptions(block_size=1 << 22),
            convert_options=pacsv.ConvertOptions(column_types=types, include_columns=list(COLUMNS),
                                                 strings_can_be_null=False),
        )
    except (pa.ArrowException, OSError) as exc:
        raise InvalidInput(f"{source}: not an Online Retail CSV ({', '.join(COLUMNS)}): {exc}") \
            from exc
    return reader


def _batches(source: Path):
    """Record batches; a value pyarrow cannot convert (a bad date) is an InvalidInput."""
    import pyarrow as pa

    reader = _open_batches(source)
    while True:
        try:
            yield reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as exc:
            raise InvalidInput(f"{source}: unreadable Online Retail row: {exc}") from exc


def derive(source: str | Path, *, max_customers: int | None = None, seed: int = 0) -> RetailTables:
    """Stream the source file into catalog items and interactions (see module docstring).

    max_customers keeps a seeded random sample of customers, and only the items they bought.
    """
    source = Path(source)
    if not source.is_file():
        raise InvalidInput(f"{source}: no such file")
    counts: Counter = Counter({key: 0 for key in (
        "rows", "cancellation_rows", "non_positive_quantity_rows", "zero_price_rows",
        "non_product_rows", "bad_date_rows", "sale_rows", "empty_description_sale_rows",
        "guest_sale_rows")})
    excluded_codes: Counter = Counter()
    descriptions: dict[str, Counter] = defaultdict(Counter)
    prices: dict[str, list[float]] = defaultdict(list)
    first_sale: dict[str, int] = {}
    # Interaction columns as integer codes in array.array: 8 bytes a field, not an object.
    user_index: dict[str, int] = {}
    code_index: dict[str, int] = {}
    users, codes, stamps = array("q"), array("q"), array("q")
    quantities, invoices = array("d"), array("q")
    for batch in _batches(source):
        cols = {name: batch.column(name).to_pylist() for name in COLUMNS}
        counts["rows"] += batch.num_rows
        for invoice, code, desc, qty, when, price, customer in zip(
            cols["InvoiceNo"], cols["StockCode"], cols["Description"], cols["Quantity"],
            cols["InvoiceDate"], cols["UnitPrice"], cols["CustomerID"],
        ):
            code = code.strip()
            if invoice.startswith("C"):
                counts["cancellation_rows"] += 1
                continue
            if qty is None or qty <= 0:
                counts["non_positive_quantity_rows"] += 1
                continue
            if price is None or price <= 0:
                counts["zero_price_rows"] += 1
                continue
            if not PRODUCT_CODE.match(code):
                counts["non_product_rows"] += 1
                excluded_codes[code] += 1
                continue
            if when is None:
                counts["bad_date_rows"] += 1
                continue
            epoch = int(when.timestamp())
            counts["sale_rows"] += 1
            desc = " ".join(desc.split())
            if desc:
                descriptions[code][desc] += 1
            else:
                counts["empty_description_sale_rows"] += 1
            prices[code].append(price)
            first_sale[code] = min(epoch, first_sale.get(code, epoch))
            if not customer.strip():
                counts["guest_sale_rows"] += 1
                continue
            users.append(user_index.setdefault(customer.strip().removesuffix(".0"),
                                               len(user_index)))
            codes.append(code_index.setdefault(code, len(code_index)))
            stamps.append(epoch)
            quantities.append(qty)
            invoices.append(int(invoice) if invoice.isdigit() else -1)
        del cols
    if counts["sale_rows"] == 0:
        raise InvalidInput(f"{source}: no sale rows found; is this the Online Retail file?")

    titled = {code for code, c in descriptions.items() if c}
    counts["codes_without_description"] = len(set(prices) - titled)
    user_names = np.asarray(list(user_index), dtype=object)
    code_names = np.asarray(list(code_index), dtype=object)
    users_a = user_names[np.frombuffer(users, dtype=np.int64)]
    codes_a = code_names[np.frombuffer(codes, dtype=np.int64)]
    stamps_a = np.frombuffer(stamps, dtype=np.int64)
    code_titled = np.fromiter((c in titled for c in code_names), dtype=bool, count=len(code_names))
    keep = code_titled[np.frombuffer(codes, dtype=np.int64)]
    counts["interactions_of_undescribed_codes"] = int((~keep).sum())
    if max_customers is not None:
        customers = np.unique(users_a[keep])
        rng = np.random.default_rng(seed)
        chosen = set(rng.choice(customers, size=min(max_customers, len(customers)), replace=False))
        user_chosen = np.fromiter((u in chosen for u in user_names), dtype=bool,
                                  count=len(user_names))
        keep &= user_chosen[np.frombuffer(users, dtype=np.int64)]
        titled = set(codes_a[keep])

    items = [
        {
            "item_id": code,
            "title": sorted(descriptions[code].items(), key=lambda kv: (-kv[1], kv[0]))[0][0],
            "created_at": first_sale[code],
            "price": f"{statistics.median(prices[code]):.2f}",
            "price_band": price_band(statistics.median(prices[code])),
        }
        for code in sorted(titled)
    ]
    users_a, codes_a, stamps_a = users_a[keep], codes_a[keep], stamps_a[keep]
    label_of = {item["item_id"]: i for i, item in enumerate(items)}
    labels = np.fromiter((label_of[c] for c in codes_a), dtype=np.int64, count=len(codes_a))
    user_hash = np.fromiter((zlib.crc32(u.encode()) for u in users_a), dtype=np.uint64,
                            count=len(users_a))
    keys = tie_break_keys(user_hash, labels, stamps_a.astype(np.float64), seed)
    order = np.lexsort((keys, stamps_a, users_a.astype(str)))
    quantities_a = np.frombuffer(quantities, dtype=np.float64)[keep][order]
    invoices_a = np.frombuffer(invoices, dtype=np.int64)[keep][order]
    report = {
        **counts,
        "excluded_codes": dict(excluded_codes.most_common()),
        "items": len(items),
        "customers": int(len(np.unique(users_a))),
        "interactions": int(len(users_a)),
        "max_customers": max_customers,
        "seed": seed,
        "source_sha256": sha256_file(source),
    }
    return RetailTables(items, users_a[order], codes_a[order], stamps_a[order], quantities_a,
                        invoices_a, report)


def _iso(epoch: int) -> str:
    return np.datetime_as_string(np.datetime64(int(epoch), "s"), unit="s") + "Z"


def _write_csv_gz(path: Path, names: list[str], rows) -> None:
    import csv
    import gzip
    import io

    # mtime=0 and no file name in the header: the same input gives byte-identical files.
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                                compresslevel=9) as gz, \
            io.TextIOWrapper(gz, encoding="utf-8", newline="") as text:
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(names)
        writer.writerows(rows)


ITEM_COLUMNS = ["item_id", "title", "created_at", "price", "price_band"]
INTERACTION_COLUMNS = ["user_id", "item_id", "timestamp", "event", "quantity", "invoice"]


def write_tables(tables: RetailTables, out_dir: str | Path, fmt: str = "csv") -> dict[str, Path]:
    """catalog + interactions (csv.gz or parquet) and a README with attribution and counts."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    item_rows = ([it["item_id"], it["title"], _iso(it["created_at"]), it["price"], it["price_band"]]
                 for it in tables.items)
    event_rows = (
        [u, c, _iso(t), "purchase", f"{q:g}", str(i)]
        for u, c, t, q, i in zip(tables.users, tables.item_ids, tables.timestamps.tolist(),
                                 tables.quantities.tolist(), tables.invoices.tolist())
    )
    if fmt == "csv":
        paths = {"catalog": out / "catalog.csv.gz", "interactions": out / "interactions.csv.gz"}
        _write_csv_gz(paths["catalog"], ITEM_COLUMNS, item_rows)
        _write_csv_gz(paths["interactions"], INTERACTION_COLUMNS, event_rows)
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        paths = {"catalog": out / "catalog.parquet", "interactions": out / "interactions.parquet"}
        pq.write_table(pa.Table.from_pylist(
            [dict(zip(ITEM_COLUMNS, row)) for row in item_rows]), paths["catalog"])
        pq.write_table(pa.table(dict(zip(INTERACTION_COLUMNS, map(list, zip(*event_rows))))
                                if len(tables.users) else {n: [] for n in INTERACTION_COLUMNS}),
                       paths["interactions"])
    else:
        raise InvalidInput(f"format must be csv or parquet, not {fmt!r}")
    paths["readme"] = out / "README.md"
    paths["readme"].write_text(readme_text(tables.report))
    return paths


def readme_text(report: dict[str, Any]) -> str:
    """The README written beside derived files: what they are, how made, attribution."""
    lines = [
        "# Online Retail, derived catalog and interactions",
        "",
        "Written by `recserve data online-retail` (export/online_retail.py): one item per "
        "product stock code (title = most frequent non-empty description, median price, "
        "first sale as created_at); one purchase interaction per sale row of a known "
        "customer (cancellations, returns, zero-price adjustments, non-product codes and "
        "guest rows excluded), ordered by user, time and a seeded key within an invoice.",
        "Row counts are over the whole source; items, customers and interactions are what "
        "was written.",
        "",
        "```",
        "recserve data online-retail --source online_retail.csv.gz --out DIR"
        + (f" --max-customers {report['max_customers']} --seed {report['seed']}"
           if report.get("max_customers") is not None else ""),
        "```",
        "",
        "| count | value |",
        "| --- | --- |",
    ]
    lines += [f"| {k} | {v} |" for k, v in report.items() if k != "excluded_codes"]
    excluded = ", ".join(f"{c} ({n})" for c, n in report.get("excluded_codes", {}).items())
    lines += ["", f"Excluded non-product codes (sale rows): {excluded or 'none'}", "",
              "## Source and licence", "", ATTRIBUTION, ""]
    return "\n".join(lines)
