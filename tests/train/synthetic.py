"""A small shop with learnable taste: customers buy mostly within one product family.

Items are "<COLOUR> <FAMILY>" (8 families x 6 colours); each customer keeps to one family
(85% of items) over a year of invoices, several items per invoice sharing one timestamp.
One item, the lantern, is listed and sold only in the last weeks: the future.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
from pathlib import Path

import numpy as np

FAMILIES = ["CANDLE HOLDER", "COFFEE MUG", "SHOPPING BAG", "CUSHION COVER", "WALL CLOCK",
            "GREETING CARD", "TABLE LAMP", "PHOTO FRAME"]
COLOURS = ["RED", "BLUE", "GREEN", "IVORY", "PINK", "BLACK"]
FUTURE_ITEM = "99999"
START = dt.datetime(2011, 1, 1, tzinfo=dt.timezone.utc)
DAYS = 360


def _iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def items() -> list[dict]:
    out = []
    for f, family in enumerate(FAMILIES):
        for c, colour in enumerate(COLOURS):
            out.append({"item_id": f"{10000 + f * 10 + c}", "title": f"{colour} {family}",
                        "created_at": _iso(START), "price": f"{1 + c}.50", "family": family})
    out.append({"item_id": FUTURE_ITEM, "title": "GOLD GARDEN LANTERN",
                "created_at": _iso(START + dt.timedelta(days=DAYS - 20)), "price": "9.99",
                "family": "LANTERN"})
    return out


def interactions(n_users: int = 80, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    catalog = [it for it in items() if it["item_id"] != FUTURE_ITEM]
    by_family = {f: [it["item_id"] for it in catalog if it["family"] == f] for f in FAMILIES}
    rows = []
    invoice = 500000
    for u in range(n_users):
        family = FAMILIES[u % len(FAMILIES)]
        days = np.sort(rng.choice(DAYS - 1, size=int(rng.integers(5, 9)), replace=False))
        for day in days:
            invoice += 1
            when = START + dt.timedelta(days=int(day), hours=int(rng.integers(8, 18)))
            for _ in range(int(rng.integers(2, 5))):
                if rng.random() < 0.85:
                    item = str(rng.choice(by_family[family]))
                else:
                    item = str(rng.choice([it["item_id"] for it in catalog]))
                rows.append({"user_id": f"{20000 + u}", "item_id": item, "timestamp": _iso(when),
                             "event": "purchase", "invoice": str(invoice)})
            if day >= DAYS - 20 and rng.random() < 0.5:
                rows.append({"user_id": f"{20000 + u}", "item_id": FUTURE_ITEM,
                             "timestamp": _iso(when), "event": "purchase", "invoice": str(invoice)})
    return rows


def write_csv_gz(path: Path, rows: list[dict]) -> Path:
    with gzip.open(path, "wt", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_shop(directory: Path, n_users: int = 80, seed: int = 0) -> tuple[Path, Path]:
    """(catalog.csv.gz, interactions.csv.gz) of the synthetic shop, in directory."""
    directory.mkdir(parents=True, exist_ok=True)
    catalog = write_csv_gz(directory / "catalog.csv.gz", items())
    events = write_csv_gz(directory / "interactions.csv.gz", interactions(n_users, seed))
    return catalog, events


FAMILY_WORDS = ["candlelight", "coffee", "tote", "sofa", "time", "birthday", "lighting", "pictures"]
COLOUR_WORDS = ["crimson", "navy", "emerald", "cream", "rose", "ebony"]


def queries(seed: int = 0) -> list[dict]:
    """Search-log rows in the customers' words ('crimson candlelight'; no title word in
    common with the item, so only training can connect them), over the same year."""
    rng = np.random.default_rng(seed)
    rows = []
    for it in items():
        if it["item_id"] == FUTURE_ITEM:
            continue
        words = f"{COLOUR_WORDS[COLOURS.index(it['title'].split()[0])]} " \
                f"{FAMILY_WORDS[FAMILIES.index(it['family'])]}"
        for _ in range(4):
            when = START + dt.timedelta(days=int(rng.integers(0, DAYS)))
            rows.append({"search_terms": f"something {words}", "item_id": it["item_id"],
                         "ts": _iso(when)})
    rows.append({"search_terms": "", "item_id": "10000", "ts": _iso(START)})           # empty
    rows.append({"search_terms": "a gift", "item_id": "nope", "ts": _iso(START)})      # unknown
    rows.append({"search_terms": "a gift", "item_id": "10000", "ts": "yesterday-ish"})  # bad time
    return rows
