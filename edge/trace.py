"""Read exported tag traces (CSV or Parquet: timestamp, tag, value, optional machine and status) for offline KPIs."""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ("REQUIRED_COLUMNS", "OPTIONAL_COLUMNS", "TraceError", "TraceRow", "Trace", "read_trace", "parse_timestamp", "parse_value")

REQUIRED_COLUMNS = ("timestamp", "tag", "value")
OPTIONAL_COLUMNS = ("machine", "status")
STATUSES = ("good", "uncertain", "bad")


class TraceError(ValueError):
    """A trace file cannot be read; the message names the file, the row (1-based, header is row 1) and the value."""

    def __init__(self, message: str, *, file: str, row: int | None = None, column: str | None = None, value: object = None) -> None:
        super().__init__(message)
        self.file = file
        self.row = row
        self.column = column
        self.value = value


@dataclass(frozen=True, slots=True)
class TraceRow:
    """One tag value at one instant: UTC epoch ms, machine id, tag name, typed value and status."""

    ts_ms: int
    machine: str
    tag: str
    value: Any
    status: str


@dataclass
class Trace:
    """The rows of one trace file, in file order, grouped by machine on demand."""

    path: str
    rows: list[TraceRow] = field(default_factory=list)

    def machines(self) -> list[str]:
        return sorted({row.machine for row in self.rows})

    def tags(self) -> list[str]:
        return sorted({row.tag for row in self.rows})

    def rows_of(self, machine: str) -> list[TraceRow]:
        """Return the machine's rows sorted by time; rows of equal time keep their file order."""
        return sorted((row for row in self.rows if row.machine == machine), key=lambda row: row.ts_ms)


def parse_timestamp(text: object) -> int:
    """Return UTC epoch ms from epoch milliseconds or an ISO-8601 time with a UTC offset (``Z`` or ``+08:00``)."""
    if isinstance(text, bool):
        raise ValueError("a boolean is not a timestamp")
    if isinstance(text, int):
        return text
    if isinstance(text, float):
        if not text.is_integer():
            raise ValueError("epoch milliseconds must be whole numbers")
        return int(text)
    if isinstance(text, dt.datetime):
        stamp = text
    else:
        raw = str(text).strip()
        if raw.lstrip("-").isdigit():
            return int(raw)
        try:
            stamp = dt.datetime.fromisoformat(raw)
        except ValueError:
            raise ValueError("not ISO-8601 and not epoch milliseconds") from None
    if stamp.tzinfo is None:
        raise ValueError("the time has no UTC offset; append Z for UTC or the plant's offset such as +08:00")
    return round(stamp.timestamp() * 1000)


def parse_value(text: object) -> Any:
    """Type a trace value: integers and floats become numbers, ``true``/``false`` booleans, other text stays text."""
    if not isinstance(text, str):
        return text
    raw = text.strip()
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        number = float(raw)
    except ValueError:
        return raw
    return number if number == number else raw  # keep the text "nan" rather than a NaN


def _check_columns(columns: Iterable[str], path: str) -> None:
    present = list(columns)
    for name in REQUIRED_COLUMNS:
        if name not in present:
            shown = ", ".join(present) or "none"
            msg = f"{path}: missing column {name!r}; found columns: {shown}. A trace needs timestamp, tag and value, and may have machine and status."
            raise TraceError(msg, file=path, row=1, column=name)


def _rows(records: Iterator[dict[str, Any]], path: str, default_machine: str) -> list[TraceRow]:
    rows: list[TraceRow] = []
    for number, record in enumerate(records, start=2):
        stamp = record.get("timestamp")
        try:
            ts_ms = parse_timestamp(stamp)
        except ValueError as exc:
            raise TraceError(f"{path}: row {number}: cannot read timestamp {stamp!r}: {exc}", file=path, row=number, column="timestamp", value=stamp) from None
        tag = record.get("tag")
        if tag is None or str(tag).strip() == "":
            raise TraceError(f"{path}: row {number}: the tag is empty; every row needs a tag name", file=path, row=number, column="tag")
        status = str(record.get("status") or "good").strip().lower()
        if status not in STATUSES:
            msg = f"{path}: row {number}: unknown status {record.get('status')!r}; use good, uncertain or bad"
            raise TraceError(msg, file=path, row=number, column="status", value=record.get("status"))
        raw = record.get("value")
        value = None if raw is None or raw == "" else parse_value(raw)
        if value is None:
            status = "bad"
        machine = str(record.get("machine") or default_machine)
        rows.append(TraceRow(ts_ms, machine, str(tag).strip(), value, status))
    return rows


def _read_csv(path: Path, default_machine: str) -> list[TraceRow]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        _check_columns(reader.fieldnames or [], str(path))
        return _rows(reader, str(path), default_machine)


def _read_parquet(path: Path, default_machine: str) -> list[TraceRow]:
    try:
        import pyarrow.parquet as parquet
    except ImportError as exc:
        raise TraceError(f"{path}: reading Parquet needs pyarrow; install it with `pip install pyarrow` or export the trace as CSV", file=str(path)) from exc
    try:
        table = parquet.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types for unreadable files
        raise TraceError(f"{path}: cannot read the Parquet file: {exc}", file=str(path)) from exc
    _check_columns(table.column_names, str(path))
    columns = {name: table.column(name).to_pylist() for name in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if name in table.column_names}
    count = table.num_rows
    records = ({name: values[i] for name, values in columns.items()} for i in range(count))
    return _rows(records, str(path), default_machine)


def read_trace(path: str | Path, *, default_machine: str | None = None) -> Trace:
    """Read a CSV or Parquet trace; rows without a machine column belong to ``default_machine`` (the file stem)."""
    path = Path(path)
    if not path.is_file():
        raise TraceError(f"{path}: trace file not found", file=str(path))
    machine = default_machine or path.stem.split(".")[0]
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if ".parquet" in suffixes or ".pq" in suffixes:
        rows = _read_parquet(path, machine)
    else:
        try:
            rows = _read_csv(path, machine)
        except UnicodeDecodeError as exc:
            raise TraceError(f"{path}: not a UTF-8 CSV file ({exc.reason}); export the trace as UTF-8 CSV or Parquet", file=str(path)) from exc
    if not rows:
        raise TraceError(f"{path}: the trace has a header but no rows", file=str(path))
    return Trace(str(path), rows)
