"""Natural-language query pairs, for data that has them (search logs: query -> item taken).

A query file has one row per (query text, item the user then took, time); columns are
mapped like the other inputs (`--query-columns query=search_terms,timestamp=ts`). These
pairs train the way a served `query` is used: the encoder applied to the user's words.
They are split by the same cutoff as the history pairs. Online Retail has none.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from export.catalog import ValidationReport
from export.errors import InvalidInput
from export.tabular import as_text, header, iter_rows, parse_timestamp
from train.pairs import Pair


@dataclass(frozen=True)
class QueryColumns:
    """Which file column holds each field of a query file."""

    query: str = "query"
    item_id: str = "item_id"
    timestamp: str = "timestamp"

    @classmethod
    def parse(cls, spec: str | None) -> "QueryColumns":
        """From 'query=search_terms,timestamp=ts'."""
        names = dict(query=cls.query, item_id=cls.item_id, timestamp=cls.timestamp)
        for part in (spec or "").split(","):
            if not part.strip():
                continue
            key, sep, value = (x.strip() for x in part.partition("="))
            if not sep or key not in names or not value:
                raise InvalidInput(f"bad query column mapping {part!r}: expected FIELD=COLUMN "
                                   f"with FIELD one of {sorted(names)}")
            names[key] = value
        return cls(**names)


def read_query_pairs(path: str | Path, label_of: Mapping[str, int],
                     columns: QueryColumns | None = None,
                     report: ValidationReport | None = None) -> list[Pair]:
    """One Pair (with `text`, no history) per valid row, in file order."""
    path = Path(path)
    columns = columns or QueryColumns()
    report = report if report is not None else ValidationReport(str(path))
    present = header(path)
    missing = [c for c in (columns.query, columns.item_id, columns.timestamp) if c not in present]
    if missing:
        raise InvalidInput(f"{path}: missing column(s) {missing}; columns are {present}; "
                           "map them with --query-columns FIELD=COLUMN")
    pairs = []
    for number, record, reason in iter_rows(path):
        report.rows_read += 1
        if record is None:
            report.problem("malformed", number, reason)
            continue
        text = " ".join(as_text(record.get(columns.query)).split())
        item_id = as_text(record.get(columns.item_id))
        if not text:
            report.problem("empty_query", number, "no query text")
            continue
        if item_id not in label_of:
            report.problem("unknown_item", number, f"{item_id!r} is not in the catalog")
            continue
        timestamp = parse_timestamp(record.get(columns.timestamp))
        if timestamp is None:
            report.problem("bad_timestamp", number, f"{record.get(columns.timestamp)!r}")
            continue
        report.rows_kept += 1
        pairs.append(Pair(user=-1, history=(), query_items=0, target=label_of[item_id],
                          timestamp=timestamp, text=text))
    return pairs


def split_query_pairs(pairs: list[Pair], *, start: float = -math.inf, end: float = math.inf,
                      limit: int | None = None, seed: int) -> list[Pair]:
    """The pairs with start <= time < end, in a seeded order that ignores the file order
    (a hash of seed and content), at most limit of them."""
    chosen = [p for p in pairs if start <= p.timestamp < end]
    chosen.sort(key=lambda p: (zlib.crc32(f"{seed}\x00{p.text}\x00{p.target}\x00{p.timestamp}".encode()),
                               p.text, p.target, p.timestamp))
    return chosen[:limit] if limit is not None else chosen
