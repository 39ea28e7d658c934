"""Streaming rows out of CSV, JSONL and Parquet files (plain or gzip'd), one dict at a time.

Readers never hold the whole file: CSV and JSONL go line by line, Parquet by record batch.
A row that cannot be parsed is yielded as `(number, None, reason)` so the caller can count
and report it instead of crashing; a file that cannot be read at all raises InvalidInput.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import math
import sys
from pathlib import Path
from typing import Any, Iterator

from export.errors import InvalidInput

RawRow = tuple[int, dict[str, Any] | None, str]

CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz", ".json.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")

# Catalog descriptions can be long; the csv module's default 128 KiB field cap is too small.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def file_format(path: str | Path) -> str:
    """'csv', 'jsonl' or 'parquet', from the file name."""
    name = str(path).lower()
    for fmt, suffixes in (("csv", CSV_SUFFIXES), ("jsonl", JSONL_SUFFIXES),
                          ("parquet", PARQUET_SUFFIXES)):
        if name.endswith(suffixes):
            return fmt
    raise InvalidInput(
        f"{path}: unknown file type; use .csv, .jsonl or .parquet (optionally .gz for text)"
    )


def _open_text(path: Path) -> io.TextIOBase:
    opener = gzip.open if str(path).lower().endswith(".gz") else open
    # errors="replace": a stray byte becomes U+FFFD in that field instead of aborting the file.
    return opener(path, "rt", encoding="utf-8", errors="replace", newline="")


def header(path: str | Path) -> list[str]:
    """Column names of a file (for JSONL: the keys of the first parseable object)."""
    path = Path(path)
    if file_format(path) == "csv" and path.is_file():
        with _open_text(path) as fh:
            delimiter = "\t" if ".tsv" in path.name.lower() else ","
            try:
                return [n.strip() for n in next(csv.reader(fh, delimiter=delimiter))]
            except (StopIteration, csv.Error):
                return []
            except (OSError, EOFError) as exc:
                raise InvalidInput(f"{path}: cannot be read: {exc}") from exc
    if file_format(path) == "parquet" and path.is_file():
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names)
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise InvalidInput(f"{path}: not a readable Parquet file: {exc}") from exc
    for _number, record, _reason in iter_rows(path):
        if record is not None:
            return list(record)
    return []


def iter_rows(path: str | Path) -> Iterator[RawRow]:
    """(row number, record or None, reason when None) for every data row of the file."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    fmt = file_format(path)
    try:
        if fmt == "csv":
            yield from _csv_rows(path)
        elif fmt == "jsonl":
            yield from _jsonl_rows(path)
        else:
            yield from _parquet_rows(path)
    except (OSError, EOFError) as exc:  # truncated gzip, unreadable file
        raise InvalidInput(f"{path}: cannot be read: {exc}") from exc


def _csv_rows(path: Path) -> Iterator[RawRow]:
    with _open_text(path) as fh:
        delimiter = "\t" if ".tsv" in path.name.lower() else ","
        reader = csv.reader(fh, delimiter=delimiter)
        try:
            names = [n.strip() for n in next(reader)]
        except StopIteration:
            return
        except csv.Error as exc:
            raise InvalidInput(f"{path}: unreadable CSV header: {exc}") from exc
        number = 0
        while True:
            number += 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield number, None, f"unparseable CSV line {reader.line_num}: {exc}"
                continue
            if not row or (len(row) == 1 and not row[0].strip()):
                number -= 1  # blank line: not a row
                continue
            if len(row) != len(names):
                yield number, None, f"{len(row)} fields, header has {len(names)}"
                continue
            yield number, dict(zip(names, row)), ""


def _jsonl_rows(path: Path) -> Iterator[RawRow]:
    with _open_text(path) as fh:
        number = 0
        for line in fh:
            if not line.strip():
                continue
            number += 1
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, None, f"invalid JSON: {exc.msg}"
                continue
            if not isinstance(record, dict):
                yield number, None, f"a JSON {type(record).__name__}, not an object"
                continue
            yield number, record, ""


def _parquet_rows(path: Path, batch_size: int = 65536) -> Iterator[RawRow]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise InvalidInput(f"{path}: not a readable Parquet file: {exc}") from exc
    number = 0
    for batch in parquet.iter_batches(batch_size=batch_size):
        for record in batch.to_pylist():
            number += 1
            yield number, record, ""


def as_text(value: Any) -> str:
    """A cell as a stripped string ('' for missing); numbers as written, nested as JSON."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return repr(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value).strip()


def parse_timestamp(value: Any, unit: str = "auto") -> float | None:
    """Epoch seconds from ISO-8601 text, epoch seconds or milliseconds; None when unparseable.

    unit 'auto' reads numbers of magnitude >= 1e11 as milliseconds (1e11 s is the year 5138).
    Naive ISO times are taken as UTC.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
        return moment.timestamp()
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc).timestamp()
    number: float | None = None
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        text = str(value).strip()
        if not text:
            return None
        try:
            number = float(text)
        except ValueError:
            try:
                moment = dt.datetime.fromisoformat(text)
            except ValueError:
                return None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.timezone.utc)
            return moment.timestamp()
    if not math.isfinite(number):
        return None
    if unit == "ms" or (unit == "auto" and abs(number) >= 1e11):
        number /= 1000.0
    return number


def row_count_upper_bound(path: str | Path) -> int:
    """At least the number of data rows, cheaply: Parquet metadata, else lines (a quoted CSV
    field may span lines, so lines >= rows). Lets a caller preallocate and show a total."""
    path = Path(path)
    if file_format(path) == "parquet":
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path).metadata.num_rows
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise InvalidInput(f"{path}: not a readable Parquet file: {exc}") from exc
    opener = gzip.open if str(path).lower().endswith(".gz") else open
    lines = 0
    try:
        with opener(path, "rb") as fh:
            while block := fh.read(1 << 20):
                lines += block.count(b"\n")
                last = block
        if lines == 0 or not last.endswith(b"\n"):
            lines += 1
    except (OSError, EOFError) as exc:
        raise InvalidInput(f"{path}: cannot be read: {exc}") from exc
    return lines
