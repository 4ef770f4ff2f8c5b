"""Shift calendars (schema ``valuegate/calendar/v1``): shifts with breaks by weekday, and no-order periods."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Literal

import msgspec

from valuegate.adapters.errors import ConfigError, ConfigIssue
from valuegate.adapters.yamlsource import load_yaml

__all__ = ("CALENDAR_SCHEMA", "WEEKDAYS", "Break", "Shift", "NoOrder", "ShiftCalendar", "load_calendar", "parse_calendar")

CALENDAR_SCHEMA = "valuegate/calendar/v1"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class _Spec(msgspec.Struct, forbid_unknown_fields=True):
    pass


class Break(_Spec):
    """A planned break inside a shift, as local ``HH:MM`` times; a time before the shift start falls on the next day."""

    start: str
    end: str


class Shift(_Spec):
    """A shift from ``start`` to ``end`` local time (``end`` <= ``start`` runs past midnight), on the weekdays it starts."""

    name: str
    start: str
    end: str
    weekdays: list[Weekday] = msgspec.field(default_factory=lambda: list(WEEKDAYS))
    breaks: list[Break] = []


class NoOrder(_Spec):
    """A period without production orders, as plant-local ISO dates or date-times (``2024-05-01T00:00``); it is planned downtime."""

    start: str
    end: str
    reason: str = ""

    def local_start(self) -> dt.datetime:
        return _local_datetime(self.start)

    def local_end(self) -> dt.datetime:
        return _local_datetime(self.end)


def _local_datetime(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is not None:
        raise ValueError(f"{text!r} carries a UTC offset; write plant-local times, the plant's time zone applies")
    return value


def _plain_times(data: object) -> object:
    # YAML reads unquoted dates and date-times as objects; keep them as the text the file holds.
    if isinstance(data, dict) and isinstance(data.get("no_order"), list):
        periods = []
        for period in data["no_order"]:
            if isinstance(period, dict):
                period = {key: value.isoformat() if isinstance(value, dt.date) else value for key, value in period.items()}
            periods.append(period)
        data = {**data, "no_order": periods}
    return data


class ShiftCalendar(_Spec):
    """A plant's shift plan: the shifts, their breaks and the periods without orders."""

    schema: str
    name: str
    shifts: list[Shift]
    no_order: list[NoOrder] = []
    description: str = ""


def clock_minutes(text: str) -> int:
    """Return minutes after midnight of an ``HH:MM`` time."""
    match = _CLOCK.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a local time; write HH:MM from 00:00 to 23:59")
    return int(match.group(1)) * 60 + int(match.group(2))


def _issues(calendar: ShiftCalendar, issue: callable) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    if calendar.schema != CALENDAR_SCHEMA:
        issues.append(issue("$.schema", "unknown calendar schema", CALENDAR_SCHEMA))
    names: set[str] = set()
    for index, shift in enumerate(calendar.shifts):
        where = f"$.shifts[{index}]"
        if shift.name in names:
            issues.append(issue(f"{where}.name", "duplicate shift name", None))
        names.add(shift.name)
        for field in ("start", "end"):
            if _CLOCK.match(getattr(shift, field)) is None:
                issues.append(issue(f"{where}.{field}", "not a local time", "HH:MM from 00:00 to 23:59"))
        if not shift.weekdays:
            issues.append(issue(f"{where}.weekdays", "a shift needs at least one weekday", ", ".join(WEEKDAYS)))
        for number, pause in enumerate(shift.breaks):
            for field in ("start", "end"):
                if _CLOCK.match(getattr(pause, field)) is None:
                    issues.append(issue(f"{where}.breaks[{number}].{field}", "not a local time", "HH:MM from 00:00 to 23:59"))
    for index, period in enumerate(calendar.no_order):
        try:
            start, end = period.local_start(), period.local_end()
        except ValueError as exc:
            issues.append(issue(f"$.no_order[{index}]", f"not a plant-local date-time: {exc}", "YYYY-MM-DDTHH:MM without an offset"))
            continue
        if end <= start:
            issues.append(issue(f"$.no_order[{index}].end", "the period ends before it starts", None))
    return issues


def parse_calendar(data: object, *, file: str = "<calendar>") -> ShiftCalendar:
    """Validate already-parsed YAML data as a shift calendar."""
    try:
        calendar = msgspec.convert(_plain_times(data), ShiftCalendar)
    except msgspec.ValidationError as exc:
        raise ConfigError([ConfigIssue(file, "$", str(exc))]) from exc
    issues = _issues(calendar, lambda field, message, allowed: ConfigIssue(file, field, message, allowed=allowed))
    if issues:
        raise ConfigError(issues)
    return calendar


def load_calendar(path: str | Path) -> ShiftCalendar:
    """Load and validate a shift calendar YAML file; raises ConfigError listing every problem with its line."""
    source = load_yaml(path)
    source.data = _plain_times(source.data)
    calendar = source.convert(ShiftCalendar)
    issues = _issues(calendar, lambda field, message, allowed: source.issue(field, message, allowed=allowed))
    if issues:
        raise ConfigError(issues)
    return calendar
