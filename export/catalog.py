"""Generic catalog and interaction files -> validated ItemRecords and Interactions, streamed.

Column names are mapped with `CatalogColumns` / `InteractionColumns` (CLI:
`--catalog-columns item_id=sku,title=name`). Bad rows (malformed, duplicate ids, empty
text, unknown items, unparseable timestamps, ...) are counted per reason in a
`ValidationReport`, with a few examples each; `strict` turns the first one into an
InvalidInput error. The schema is documented in docs/DATA.md.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterator, Mapping

from export.errors import InvalidInput
from export.item_store import ItemRecord
from export.tabular import as_text, header, iter_rows, parse_timestamp

MAX_EXAMPLES = 5
DEFAULT_EVENT = "purchase"


@dataclass(frozen=True, slots=True)
class Interaction:
    """One user-item event; timestamp in epoch seconds."""

    user_id: str
    item_id: str
    timestamp: float
    event: str = DEFAULT_EVENT
    weight: float = 1.0


def _parse_mapping(cls, spec: str | None):
    """'field=column,field=column' -> an instance of cls with those fields replaced."""
    base = cls()
    if not spec:
        return base
    names = {f.name for f in fields(cls)}
    changes: dict[str, Any] = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in names:
            raise InvalidInput(
                f"bad column mapping {part!r}: expected FIELD=COLUMN with FIELD one of {sorted(names)}"
            )
        if key == "attributes":
            changes[key] = tuple(v.strip() for v in value.split("|") if v.strip())
        else:
            changes[key] = value
    return replace(base, **changes)


@dataclass(frozen=True)
class CatalogColumns:
    """Which file column holds each catalog field; other columns become attributes."""

    item_id: str = "item_id"
    title: str = "title"
    text: str = "text"
    created_at: str = "created_at"
    attributes: tuple[str, ...] | None = None  # None: every column not named above

    @classmethod
    def parse(cls, spec: str | None) -> "CatalogColumns":
        """From 'item_id=sku,title=name,attributes=brand|category'."""
        return _parse_mapping(cls, spec)


@dataclass(frozen=True)
class InteractionColumns:
    """Which file column holds each interaction field, and the unit of numeric timestamps."""

    user_id: str = "user_id"
    item_id: str = "item_id"
    timestamp: str = "timestamp"
    event: str = "event"
    weight: str = "weight"
    timestamp_unit: str = "auto"  # auto | s | ms

    @classmethod
    def parse(cls, spec: str | None) -> "InteractionColumns":
        """From 'user_id=customer,timestamp=ts,timestamp_unit=ms'."""
        parsed = _parse_mapping(cls, spec)
        if parsed.timestamp_unit not in ("auto", "s", "ms"):
            raise InvalidInput(f"timestamp_unit must be auto, s or ms, not {parsed.timestamp_unit!r}")
        return parsed


@dataclass
class ValidationReport:
    """Counts of problem rows per reason, with examples; strict raises at the first problem."""

    source: str
    strict: bool = False
    rows_read: int = 0
    rows_kept: int = 0
    problems: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def problem(self, reason: str, row: int, message: str) -> None:
        if self.strict:
            raise InvalidInput(f"{self.source} row {row}: {reason}: {message} (--strict)")
        self.problems[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < MAX_EXAMPLES:
            shown.append(f"row {row}: {message}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "problems": dict(sorted(self.problems.items())),
            "examples": {k: self.examples[k] for k in sorted(self.examples)},
        }

    def summary(self) -> str:
        counts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.problems.items()))
        return (f"{Path(self.source).name}: {self.rows_read} rows, {self.rows_kept} kept"
                + (f"; problems: {counts}" if counts else ""))


def _require_columns(path: Path, wanted: Mapping[str, str], present: list[str], flag: str) -> None:
    missing = [f"{name} (column {col!r})" for name, col in wanted.items() if col not in present]
    if missing:
        raise InvalidInput(
            f"{path}: missing required column(s) {', '.join(missing)}; columns are {present}; "
            f"map them with {flag} FIELD=COLUMN"
        )


def read_catalog(
    path: str | Path, columns: CatalogColumns | None = None, report: ValidationReport | None = None
) -> Iterator[ItemRecord]:
    """Valid, de-duplicated ItemRecords in file order (the first of duplicate ids wins)."""
    path = Path(path)
    columns = columns or CatalogColumns()
    report = report if report is not None else ValidationReport(str(path))
    _require_columns(path, {"item_id": columns.item_id}, header(path), "--catalog-columns")
    named = {columns.item_id, columns.title, columns.text, columns.created_at}
    seen: dict[str, int] = {}
    for number, record, reason in iter_rows(path):
        report.rows_read += 1
        if record is None:
            report.problem("malformed", number, reason)
            continue
        item_id = as_text(record.get(columns.item_id))
        if not item_id:
            report.problem("missing_id", number, "empty item_id")
            continue
        if item_id in seen:
            report.problem("duplicate_id", number, f"{item_id!r} already at row {seen[item_id]}")
            continue
        title = as_text(record.get(columns.title))
        text = as_text(record.get(columns.text))
        if not title and not text:
            report.problem("empty_text", number, f"{item_id!r} has no title and no text")
            continue
        created_at = None
        raw_created = record.get(columns.created_at)
        if as_text(raw_created):
            created_at = parse_timestamp(raw_created)
            if created_at is None:
                report.problem("bad_created_at", number, f"{raw_created!r} (item kept, time unknown)")
        attribute_names = columns.attributes if columns.attributes is not None else \
            [k for k in record if k not in named]
        attributes = {}
        for name in attribute_names:
            value = as_text(record.get(name))
            if value:
                attributes[name] = value
        seen[item_id] = number
        report.rows_kept += 1
        yield ItemRecord(item_id, title, text, attributes, created_at)


def _weight(value: Any) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return 1.0
    try:
        weight = float(value)
    except (TypeError, ValueError):
        return None
    return weight if math.isfinite(weight) and weight >= 0 else None


def read_interactions(
    path: str | Path,
    columns: InteractionColumns | None = None,
    report: ValidationReport | None = None,
    known_items: Mapping[str, int] | None = None,
) -> Iterator[Interaction]:
    """Valid Interactions in file order; with known_items, unknown item ids are reported."""
    path = Path(path)
    columns = columns or InteractionColumns()
    report = report if report is not None else ValidationReport(str(path))
    _require_columns(
        path, {"user_id": columns.user_id, "item_id": columns.item_id,
               "timestamp": columns.timestamp},
        header(path), "--interaction-columns",
    )
    for number, record, reason in iter_rows(path):
        report.rows_read += 1
        if record is None:
            report.problem("malformed", number, reason)
            continue
        user_id = as_text(record.get(columns.user_id))
        item_id = as_text(record.get(columns.item_id))
        if not user_id or not item_id:
            report.problem("missing_id", number, f"user_id={user_id!r} item_id={item_id!r}")
            continue
        raw_time = record.get(columns.timestamp)
        timestamp = parse_timestamp(raw_time, columns.timestamp_unit)
        if timestamp is None:
            report.problem("bad_timestamp", number, f"{raw_time!r}")
            continue
        weight = _weight(record.get(columns.weight))
        if weight is None:
            report.problem("bad_weight", number, f"{record.get(columns.weight)!r}")
            continue
        if known_items is not None and item_id not in known_items:
            report.problem("unknown_item", number, f"{item_id!r} is not in the catalog")
            continue
        event = as_text(record.get(columns.event)).lower() or DEFAULT_EVENT
        report.rows_kept += 1
        yield Interaction(user_id, item_id, timestamp, event, weight)
