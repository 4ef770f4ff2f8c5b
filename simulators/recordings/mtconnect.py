"""Loader of the NIST MTConnect (SHDR) recordings: Mazak03's week and the Hurco02/04 day.

Data: NIST Smart Manufacturing Systems Test Bed (usnistgov/smstestbed).
Lines are ``timestamp|item|value[|item|value...]``; condition items carry
``|level|native code|severity|qualifier|text``. Timestamps are read as UTC;
plant days are counted in America/New_York, where the test bed is.
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from .files import Finding, finding, open_text, plant_day_bounds_ms

__all__ = (
    "MTCONNECT_ZONE",
    "MTCONNECT_RECORDINGS",
    "UNAVAILABLE",
    "MtEvent",
    "CounterIncrements",
    "MtconnectRecording",
    "load_mtconnect",
)

MTCONNECT_ZONE = "America/New_York"
UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class _Source:
    folder: str
    files: tuple[str, ...]
    device: str
    # SHDR item name -> timeline item name; timeline names are the same for every machine.
    items: dict[str, str]
    conditions: bool
    published: tuple[str, ...]


MTCONNECT_RECORDINGS: dict[str, _Source] = {
    "mazak03": _Source(
        folder="nist-mazak03-week",
        files=tuple(f"Mazak03-2016050{day}-2016050{day + 1}.txt" for day in range(2, 7)),
        device="Mazak03",
        items={
            "execution": "execution",
            "mode": "mode",
            "PartCountAct": "part_count",
            "auto_time": "auto_time",
            "total_time": "total_time",
            "program": "program",
        },
        conditions=True,
        published=("auto_time", "total_time"),
    ),
    "hurco02": _Source(
        folder="nist-hurco-mtc",
        files=("2-1-2017-Hurco02-Clean.txt",),
        device="Hurco02",
        items={
            "Program_Status": "execution",
            "Part_Count": "part_count",
            "Spindle_Time": "spindle_time",
            "Program_Name_Running": "program",
            "EStop_State": "estop",
            "avail": "availability",
        },
        conditions=False,
        published=("part_count",),
    ),
    "hurco04": _Source(
        folder="nist-hurco-mtc",
        files=("2-1-2017-Hurco04-Clean.txt",),
        device="Hurco04",
        items={
            "Program_Status": "execution",
            "Part_Count": "part_count",
            "Spindle_Time": "spindle_time",
            "Program_Name_Running": "program",
            "EStop_State": "estop",
            "avail": "availability",
        },
        conditions=False,
        published=("part_count",),
    ),
}

# Timeline items whose values are numbers; the others stay strings as recorded.
_NUMERIC = {"part_count": int, "auto_time": float, "total_time": float, "spindle_time": float, "alarm_code": int}
# Condition items: system_cond, motion_cond2, ...
_CONDITION = re.compile(r"_cond\d*$")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True, slots=True)
class MtEvent:
    """One recorded observation; ``value`` is None for an UNAVAILABLE number, strings stay as recorded."""

    ts_us: int
    item: str
    value: str | int | float | None


@dataclass(frozen=True, slots=True)
class CounterIncrements:
    """A controller counter over one plant day.

    ``increment`` is the last reading of the day minus the first, the figure
    the readings of that day show by themselves. ``rise`` adds every rise
    since the previous reading, including the one from the last reading of
    an earlier day, so a part finished before the day's first reading counts.
    """

    item: str
    first: float
    last: float
    readings: int
    rise: float

    @property
    def increment(self) -> float:
        return self.last - self.first


@dataclass(frozen=True)
class MtconnectRecording:
    """One machine's recorded timeline, its published counter increments per plant day and its findings."""

    name: str
    device: str
    zone: str
    events: list[MtEvent]
    published: dict[date, dict[str, CounterIncrements]]
    findings: list[Finding]
    # Last value of each item before the first event, for a slice that starts after the recording does.
    initial: dict[str, str | int | float | None] = field(default_factory=dict)

    @property
    def plant_days(self) -> list[date]:
        return sorted(self.published)

    def items(self) -> list[str]:
        """Return the timeline items present, in first-seen order."""
        return list(dict.fromkeys(event.item for event in self.events))

    def select(self, *, first_days: int | None = None, start: date | None = None, end: date | None = None) -> MtconnectRecording:
        """Return the events of plant days ``start`` to ``end`` (inclusive), at most ``first_days`` of them."""
        if first_days is not None and first_days < 1:
            raise ValueError(f"first_days={first_days} selects no plant day; pass 1 or more")
        days = [day for day in self.plant_days if (start is None or day >= start) and (end is None or day <= end)]
        if first_days is not None:
            days = days[:first_days]
        if not days:
            raise ValueError(
                f"no plant day between {start or 'the first day'} and {end or 'the last day'}; the {self.name} recording has days "
                f"{self.plant_days[0]} to {self.plant_days[-1]}; choose start and end dates in that range"
            )
        zone = ZoneInfo(self.zone)
        begin_us = plant_day_bounds_ms(days[0], zone)[0] * 1000
        end_us = plant_day_bounds_ms(days[-1], zone)[1] * 1000
        kept = {day.isoformat() for day in days}
        initial = dict(self.initial)
        for event in self.events:
            if event.ts_us >= begin_us:
                break
            initial[event.item] = event.value
        return replace(
            self,
            initial=initial,
            events=[event for event in self.events if begin_us <= event.ts_us < end_us],
            published={day: self.published[day] for day in days},
            findings=[item for item in self.findings if item["date"] in kept],
        )


def load_mtconnect(name: str) -> MtconnectRecording:
    """Load a shipped MTConnect recording: ``mazak03``, ``hurco02`` or ``hurco04``."""
    if name not in MTCONNECT_RECORDINGS:
        raise ValueError(f"unknown MTConnect recording {name!r}; choose one of {', '.join(MTCONNECT_RECORDINGS)}")
    parsed = _load_cached(name)
    # Events are immutable, so a copy of the lists is enough to keep callers from changing the cache.
    return replace(
        parsed,
        events=list(parsed.events),
        published={day: dict(counters) for day, counters in parsed.published.items()},
        findings=[dict(item) for item in parsed.findings],
        initial=dict(parsed.initial),
    )


@functools.lru_cache(maxsize=len(MTCONNECT_RECORDINGS))
def _load_cached(name: str) -> MtconnectRecording:
    source = MTCONNECT_RECORDINGS[name]
    zone = ZoneInfo(MTCONNECT_ZONE)
    lines = (line for file in source.files for line in open_text(source.folder, file))
    events = list(_parse(lines, source))
    findings: list[Finding] = []
    published = _published(events, source, zone)
    _check_counters(events, source, zone, findings)
    findings.sort(key=lambda item: item["date"])
    return MtconnectRecording(name, source.device, MTCONNECT_ZONE, events, published, findings)


def _parse(lines: Iterable[str], source: _Source) -> Iterable[MtEvent]:
    """Yield the timeline events of the recorded lines, deriving ``alarm_code`` from Fault conditions."""
    # Active conditions per condition item: native code -> level, in activation order.
    active: dict[str, dict[str, str]] = defaultdict(dict)
    alarm_code = 0
    for line in lines:
        fields = line.rstrip("\r\n").split("|")
        if len(fields) < 3:
            continue
        if _CONDITION.search(fields[1]):
            if source.conditions and len(fields) >= 4:
                _apply_condition(active[fields[1]], fields[2], fields[3])
                code = _alarm_code(active)
                if code != alarm_code:
                    alarm_code = code
                    yield MtEvent(_timestamp_us(fields[0]), "alarm_code", code)
            continue
        ts_us = None
        for index in range(1, len(fields) - 1, 2):
            item = source.items.get(fields[index])
            if item is None:
                continue
            if ts_us is None:
                ts_us = _timestamp_us(fields[0])
            yield MtEvent(ts_us, item, _value(item, fields[index + 1]))


def _apply_condition(codes: dict[str, str], level: str, native_code: str) -> None:
    """Update one condition item's active set following MTConnect condition semantics."""
    level = level.upper()
    if level in ("NORMAL", "UNAVAILABLE"):
        if native_code:
            codes.pop(native_code, None)
        else:
            codes.clear()
    elif level in ("WARNING", "FAULT"):
        codes.pop(native_code, None)
        codes[native_code] = level


def _alarm_code(active: dict[str, dict[str, str]]) -> int:
    """Return the native code of the Fault activated last that is still active, or 0."""
    latest = 0
    for codes in active.values():
        for native_code, level in codes.items():
            if level == "FAULT":
                latest = int(native_code) if native_code.isdigit() else -1
    return latest


def _value(item: str, text: str) -> str | int | float | None:
    kind = _NUMERIC.get(item)
    if kind is None:
        return text
    if text == UNAVAILABLE:
        return None
    number = float(text)
    return int(number) if kind is int else number


def _timestamp_us(text: str) -> int:
    return (datetime.fromisoformat(text) - _EPOCH) // timedelta(microseconds=1)


def _published(events: list[MtEvent], source: _Source, zone: ZoneInfo) -> dict[date, dict[str, CounterIncrements]]:
    days: set[date] = set()
    per_day: dict[date, dict[str, CounterIncrements]] = defaultdict(dict)
    previous: dict[str, float] = {}
    for event in events:
        day = _plant_date(event.ts_us, zone)
        if event.item == "execution" and event.value != UNAVAILABLE:
            days.add(day)
        if event.item not in source.published or event.value is None:
            continue
        days.add(day)
        value = float(event.value)
        rise = max(0.0, value - previous[event.item]) if event.item in previous else 0.0
        previous[event.item] = value
        so_far = per_day[day].get(event.item)
        if so_far is None:
            per_day[day][event.item] = CounterIncrements(event.item, value, value, 1, rise)
        else:
            per_day[day][event.item] = replace(so_far, last=value, readings=so_far.readings + 1, rise=so_far.rise + rise)
    return {day: per_day.get(day, {}) for day in sorted(days)}


def _plant_date(ts_us: int, zone: ZoneInfo) -> date:
    return datetime.fromtimestamp(ts_us // 1_000_000, tz=zone).date()


def _check_counters(events: list[MtEvent], source: _Source, zone: ZoneInfo, findings: list[Finding]) -> None:
    """Report counters that fall, that rise while the machine was unavailable, or that never count."""
    last: dict[str, tuple[int, float]] = {}
    unavailable_since: dict[str, int] = {}
    completed: dict[date, int] = defaultdict(int)
    execution: object = None
    seen_counts: dict[str, set[float]] = defaultdict(set)
    for event in events:
        day = _plant_date(event.ts_us, zone)
        if event.item == "execution":
            if event.value == "PROGRAM_COMPLETED" and execution != "PROGRAM_COMPLETED":
                completed[day] += 1
            execution = event.value
        if event.item not in _NUMERIC or event.item == "alarm_code":
            continue
        if event.value is None:
            unavailable_since.setdefault(event.item, event.ts_us)
            continue
        value = float(event.value)
        seen_counts[event.item].add(value)
        previous = last.get(event.item)
        if previous is not None and value < previous[1]:
            findings.append(finding(day, "counter_decreased", f"{event.item} fell from {previous[1]:g} to {value:g}"))
        elif previous is not None and event.item in unavailable_since and value > previous[1]:
            findings.append(
                finding(
                    day,
                    "counter_rose_while_unavailable",
                    f"{event.item} rose by {value - previous[1]:g} while the machine was UNAVAILABLE; "
                    "no per-day stream shows that time",
                )
            )
        unavailable_since.pop(event.item, None)
        last[event.item] = (event.ts_us, value)

    if "part_count" in seen_counts and len(seen_counts["part_count"]) == 1:
        first_day = _plant_date(events[0].ts_us, zone)
        findings.append(
            finding(first_day, "part_count_constant", f"part count stays {next(iter(seen_counts['part_count'])):g} for the whole recording")
        )
    if "part_count" in source.published:
        for day, counters in _published(events, source, zone).items():
            rise = counters["part_count"].rise if "part_count" in counters else 0.0
            if rise != completed.get(day, 0):
                findings.append(
                    finding(
                        day,
                        "part_count_differs_from_completed",
                        f"part count rose by {rise:g}, PROGRAM_COMPLETED was reported {completed.get(day, 0)} times",
                    )
                )
