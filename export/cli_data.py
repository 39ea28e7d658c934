"""`recserve data online-retail`: derive a generic catalog and interaction log from public data."""

from __future__ import annotations

import argparse
import time

from export.errors import InvalidInput


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sets = parser.add_subparsers(dest="dataset", metavar="DATASET")
    retail = sets.add_parser(
        "online-retail", help="UCI Online Retail transactions -> catalog + interactions",
        description="One item per product stock code, purchases of known customers; "
                    "see docs/DATA.md for the rules.",
    )
    retail.add_argument("--source", required=True,
                        help="online_retail.csv.gz (e.g. ../shared/data/online-retail/...)")
    retail.add_argument("--out", required=True, help="folder for catalog, interactions, README")
    retail.add_argument("--format", choices=("csv", "parquet"), default="csv",
                        help="csv (gzip'd) or parquet (default csv)")
    retail.add_argument("--max-customers", type=int, default=None,
                        help="keep a seeded random sample of customers and the items they bought")
    retail.add_argument("--seed", type=int, default=0,
                        help="seed for the customer sample and same-timestamp ordering")


def run(args: argparse.Namespace) -> int:
    if args.dataset != "online-retail":
        raise InvalidInput("name a data set: recserve data online-retail --source FILE --out DIR")
    from rich.console import Console

    from export.online_retail import derive, write_tables

    console = Console(stderr=True)
    started = time.perf_counter()
    with console.status("reading Online Retail transactions"):
        tables = derive(args.source, max_customers=args.max_customers, seed=args.seed)
        paths = write_tables(tables, args.out, args.format)
    report = tables.report
    console.print(
        f"{report['rows']:,} rows -> {report['items']:,} items, {report['customers']:,} "
        f"customers, {report['interactions']:,} purchases in "
        f"{time.perf_counter() - started:.1f}s"
    )
    skipped = {k: v for k, v in report.items() if k.endswith("_rows") and k != "sale_rows"}
    console.print("excluded rows: " + ", ".join(f"{k} {v:,}" for k, v in skipped.items()))
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0
