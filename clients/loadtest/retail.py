"""A workload from the Online Retail transactions: real product names, customers, histories.

Item ids are StockCode strings and users are CustomerID strings ("17850"), the same keys as
the demo catalog. Rows the data README warns about are dropped: cancellations, non-positive
quantities, empty descriptions, non-product codes (POST, M, DOT, BANK CHARGES, ...), guest
rows without a customer. Purchases inside one invoice share a timestamp, so their order is a
seeded shuffle, never file order.

    python -m clients.loadtest.retail SOURCE.csv.gz OUT.jsonl.gz \
        --catalog export/demo/catalog.csv.gz --interactions export/demo/interactions.csv.gz
rebuilds the default file: items limited to the demo catalog, users to its customers.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import random
import re
from collections import Counter, defaultdict
from collections.abc import Mapping
from pathlib import Path

from clients.loadtest.workload import DEFAULT_MIX, Workload, WorkloadError, save_workload
from protos import recommender_pb2 as pb

# Product codes are five digits with an optional letter suffix (85123A); the rest are fees.
PRODUCT_CODE = re.compile(r"^\d{5}[A-Za-z]{0,2}$")


def read_purchases(csv_path: Path, seed: int = 0) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(stock code -> most common product name, customer id -> purchased codes in time order)."""
    names: dict[str, Counter] = defaultdict(Counter)
    rows: dict[str, list[tuple[str, str]]] = defaultdict(list)
    with gzip.open(csv_path, "rt", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            code, name = row["StockCode"].strip(), row["Description"].strip()
            if row["InvoiceNo"].startswith("C") or not name or not PRODUCT_CODE.match(code):
                continue
            if float(row["Quantity"] or 0) <= 0:
                continue
            names[code][name] += 1
            if row["CustomerID"].strip():
                customer = str(int(float(row["CustomerID"])))
                rows[customer].append((row["InvoiceDate"], code))
    rng = random.Random(seed)
    histories = {}
    for customer, purchases in rows.items():
        rng.shuffle(purchases)  # ties inside an invoice: seeded order, then a stable time sort
        purchases.sort(key=lambda p: p[0])
        histories[customer] = _without_repeats([code for _, code in purchases])
    return {code: counts.most_common(1)[0][0] for code, counts in names.items()}, histories


def read_ids(path: str | Path, column: str) -> set[str]:
    """The values of `column` in a CSV (plain or .gz): item_id of a catalog, user_id of events."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if column not in (reader.fieldnames or []):
            raise WorkloadError(f"{path} has no {column!r} column")
        return {row[column].strip() for row in reader}


def build_retail_workload(csv_path: str | Path, *, n_text: int = 3000, n_users: int = 1000,
                          n_histories: int = 400, k: int = 10, seed: int = 0,
                          mix: Mapping[str, float] = DEFAULT_MIX,
                          known_items: set[str] | None = None,
                          known_users: set[str] | None = None) -> Workload:
    """Text queries from product names (whole or a 2-3 word fragment), user requests from
    customer ids, history requests from windows of 3-20 consecutive purchases of a customer.

    `known_items` (a catalog's ids) keeps only those items, in names and in histories, so no
    request names an item the server does not have; `known_users` draws user requests only
    from users the server has interactions for."""
    names, histories = read_purchases(Path(csv_path), seed)
    if known_items is not None:
        names = {code: name for code, name in names.items() if code in known_items}
        histories = {c: _without_repeats([i for i in h if i in known_items]) for c, h in histories.items()}
    rng = random.Random(seed)
    by_kind: dict[str, list[pb.RecommendRequest]] = {"text": [], "user": [], "history": []}
    for name in rng.sample(sorted(set(names.values())), min(n_text, len(set(names.values())))):
        by_kind["text"].append(pb.RecommendRequest(query=_query_from_name(name, rng), k=k))
    customers = sorted(histories)
    users = [c for c in customers if known_users is None or c in known_users]
    for customer in rng.sample(users, min(n_users, len(users))):
        by_kind["user"].append(pb.RecommendRequest(user_id=customer, k=k))
    long_enough = [c for c in customers if len(histories[c]) >= 3]
    for customer in rng.sample(long_enough, min(n_histories, len(long_enough))):
        by_kind["history"].append(pb.RecommendRequest(history=_window(histories[customer], rng), k=k))
    requests, weights = [], []
    for kind, members in by_kind.items():
        requests += members
        weights += [mix.get(kind, 0.0) / len(members)] * len(members) if members else []
    scope = "" if known_items is None and known_users is None else ", restricted to a catalog"
    return Workload.of(requests, weights, f"Online Retail ({Path(csv_path).name}, seed {seed}{scope})")


def _query_from_name(name: str, rng: random.Random) -> str:
    """Most queries are a whole product name; some are a lower-case fragment, as people type."""
    words = name.split()
    if len(words) < 3 or rng.random() < 0.6:
        return name
    size = rng.randint(2, 3)
    start = rng.randrange(len(words) - size + 1)
    return " ".join(words[start:start + size]).lower()


def _window(history: list[str], rng: random.Random) -> list[str]:
    """A run of 3-20 consecutive purchases ending at a random point, most recent last."""
    end = rng.randint(3, len(history))
    size = rng.randint(3, 20)
    return history[max(0, end - size):end]


def _without_repeats(codes: list[str]) -> list[str]:
    return [c for i, c in enumerate(codes) if i == 0 or c != codes[i - 1]]


def known_ids(args: argparse.Namespace) -> dict[str, set[str] | None]:
    """known_items / known_users from --catalog / --interactions, when given."""
    return {"known_items": read_ids(args.catalog, "item_id") if args.catalog else None,
            "known_users": read_ids(args.interactions, "user_id") if args.interactions else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="derive a load-test workload from Online Retail")
    parser.add_argument("source", help="online_retail.csv.gz")
    parser.add_argument("out", help="workload file to write (.jsonl or .jsonl.gz)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--catalog", help="keep only this catalog's items (CSV with item_id)")
    parser.add_argument("--interactions", help="draw users from these events (CSV with user_id)")
    args = parser.parse_args(argv)
    workload = build_retail_workload(args.source, seed=args.seed, **known_ids(args))
    save_workload(workload, args.out)
    print(f"{args.out}: {workload.summary()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
