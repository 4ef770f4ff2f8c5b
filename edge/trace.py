"""Read exported tag traces (CSV or Parquet: timestamp, tag, value, optional machine and status) for offline KPIs."""

from __future__ import annotations

import csv
import datetime as dt
import glob
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = (
    "REQUIRED_COLUMNS",
    "OPTIONAL_COLUMNS",
    "TraceError",
    "TraceRow",
    "Trace",
    "read_trace",
    "parse_timestamp",
    "parse_value",
    "format_timestamp",
    "resolve_tag_map",
)

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
    """One tag value at one instant: UTC epoch ms, machine id, tag name, typed value, status and its row in the file."""

    ts_ms: int
    machine: str
    tag: str
    value: Any
    status: str
    row: int = 0
    """Row number in the trace file as a spreadsheet shows it (header row 1, first data row 2); 0 for rows from no file."""


@dataclass
class Trace:
    """The rows of one trace file, in file order, grouped by machine on demand."""

    path: str
    rows: list[TraceRow] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    """Columns of the file that a trace does not use, in file order."""
    zone: str | None = None
    """Plant IANA time zone the source of the trace names (a shipped recording does); None for a file."""

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
        if isinstance(text, dt.datetime):
            raise ValueError("the time has no UTC offset; store the column as a UTC timestamp type (for example timestamp[ms, tz=UTC]) or as ISO-8601 text with an offset")
        raise ValueError("the time has no UTC offset; append Z for UTC or the plant's offset such as +08:00")
    return round(stamp.timestamp() * 1000)


def format_timestamp(ts_ms: int) -> str:
    """Format UTC epoch ms as ISO-8601 with ``Z``, keeping milliseconds only when they are not zero."""
    stamp = dt.datetime.fromtimestamp(ts_ms / 1000, dt.timezone.utc)
    text = stamp.isoformat(timespec="milliseconds" if ts_ms % 1000 else "seconds")
    return text.replace("+00:00", "Z")


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
            if len(present) == 1 and any(mark in present[0] for mark in ";\t|"):
                msg += " The header looks like one column: write the CSV with commas as separators."
            raise TraceError(msg, file=path, row=1, column=name)
    for name in set(present):
        if present.count(name) > 1:
            raise TraceError(f"{path}: row 1: column {name!r} appears {present.count(name)} times; keep one", file=path, row=1, column=name)


def _ignored_columns(columns: Iterable[str]) -> list[str]:
    return [name for name in columns if name not in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)]


def _rows(records: Iterable[tuple[int, dict[str, Any]]], path: str, default_machine: str) -> list[TraceRow]:
    rows: list[TraceRow] = []
    for number, record in records:
        stamp = record.get("timestamp")
        try:
            ts_ms = parse_timestamp(stamp)
        except ValueError as exc:
            shown = stamp.isoformat() if isinstance(stamp, dt.datetime) else repr(stamp)
            raise TraceError(f"{path}: row {number}: cannot read timestamp {shown}: {exc}", file=path, row=number, column="timestamp", value=stamp) from None
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
        rows.append(TraceRow(ts_ms, machine, str(tag).strip(), value, status, number))
    return rows


def _csv_records(reader: Any, header: list[str], path: str) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (row number, record) per data row; skip blank rows and raise on a row whose field count differs from the header."""
    for fields in reader:
        if not any(text.strip() for text in fields):
            continue
        number = reader.line_num
        if len(fields) != len(header):
            msg = (
                f"{path}: row {number} has {len(fields)} fields but the header has {len(header)} columns ({', '.join(header)}); "
                "give every row one field per column, empty where there is no value"
            )
            raise TraceError(msg, file=path, row=number, value=len(fields))
        yield number, dict(zip(header, fields, strict=True))


def _read_csv(path: Path, default_machine: str) -> tuple[list[TraceRow], list[str]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        first = next(reader, [])
        # Header names are matched without regard to case or surrounding spaces, as spreadsheets export them.
        header = [name.strip().lower() for name in first]
        _check_columns(header, str(path))
        return _rows(_csv_records(reader, header, str(path)), str(path), default_machine), _ignored_columns(header)


def _read_parquet(path: Path, default_machine: str) -> tuple[list[TraceRow], list[str]]:
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
    records = ((i + 2, {name: values[i] for name, values in columns.items()}) for i in range(count))
    return _rows(records, str(path), default_machine), _ignored_columns(table.column_names)


def read_trace(path: str | Path, *, default_machine: str | None = None) -> Trace:
    """Read a CSV or Parquet trace; rows without a machine column belong to ``default_machine`` (the file stem)."""
    path = Path(path)
    if not path.is_file():
        raise TraceError(f"{path}: trace file not found", file=str(path))
    machine = default_machine or path.stem.split(".")[0]
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if ".parquet" in suffixes or ".pq" in suffixes:
        rows, ignored = _read_parquet(path, machine)
    else:
        try:
            rows, ignored = _read_csv(path, machine)
        except UnicodeDecodeError as exc:
            raise TraceError(f"{path}: not a UTF-8 CSV file ({exc.reason}); export the trace as UTF-8 CSV or Parquet", file=str(path)) from exc
    if not rows:
        raise TraceError(f"{path}: the trace has a header but no rows", file=str(path))
    return Trace(str(path), rows, ignored)


def _shipped_maps(folder: Path) -> list[str]:
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*.yaml"))


def resolve_tag_map(reference: str) -> Path:
    """Find the tag map file that ``reference`` names, like an edge configuration's ``tag_map`` with the working directory as base.

    An absolute path is tried as it is. A relative path is tried in the
    working directory first and then in the shipped maps folder. Each try
    takes the name as written and with ``.yaml`` appended. When none is a
    file, a bare name such as ``filler-modbus`` matches a shipped map's file
    name in any subfolder. Raises ``ValueError`` listing the shipped maps
    when nothing matches.
    """
    from valuegate.adapters.tagmap import shipped_tag_map_dir

    shipped = shipped_tag_map_dir()
    if not reference.strip():
        raise ValueError(f"the tag map name is empty; give a tag map file or one of the shipped maps: {', '.join(_shipped_maps(shipped))}")
    requested = Path(reference).expanduser()
    bases = [Path()] if requested.is_absolute() else [Path.cwd(), shipped]
    names = [requested] if requested.suffix in (".yaml", ".yml") else [requested, requested.with_name(requested.name + ".yaml")]
    tried = [base / name for base in bases for name in names]
    for candidate in tried:
        if candidate.is_file():
            return candidate

    if not requested.is_absolute() and len(requested.parts) == 1:
        stem = requested.name.removesuffix(".yaml")
        matches = sorted(shipped.rglob(f"{glob.escape(stem)}.yaml"))
        if len(matches) == 1:
            return matches[0]
        if matches:
            shown = ", ".join(path.relative_to(shipped).as_posix() for path in matches)
            raise ValueError(f"tag map {reference!r} matches several shipped maps: {shown}; give the folder as well")

    looked = ", ".join(str(path) for path in tried)
    msg = (
        f"tag map {reference!r} not found; looked for {looked}. "
        f"Give a tag map file, or one of the shipped maps (folder {shipped}): {', '.join(_shipped_maps(shipped))}"
    )
    raise ValueError(msg)
