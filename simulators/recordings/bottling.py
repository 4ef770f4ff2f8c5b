"""Loader of the juice bottling line recording: production windows, stops, hourly counts, published figures.

The recording is the Zenodo dataset 10.5281/zenodo.18146866 by Gabriel
Augusto David (CC BY 4.0). Dates are Excel serial days and times are
fractions of a day in local plant time. The source names no time zone, so
America/Sao_Paulo is assumed: UTC-3 all year, because Brazil dropped
daylight saving time in 2019.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from .files import Finding, epoch_ms, finding, open_text, plant_day_bounds_ms
from .intervals import merge_intervals, overlap_ms, subtract_intervals

__all__ = (
    "BOTTLING_FOLDER",
    "BOTTLING_ZONE",
    "PublishedDay",
    "HourCount",
    "BottlingDay",
    "BottlingRecording",
    "load_bottling",
)

BOTTLING_FOLDER = "bottling-line"
BOTTLING_ZONE = "America/Sao_Paulo"

_EXCEL_EPOCH = date(1899, 12, 30)
_DAY_MS = 86_400_000
_HOUR_MS = 3_600_000
# Published hours and the replayed stops may differ by this much before a day is reported.
_HOURS_TOLERANCE = 0.01
# Containers per running minute above which an hour's count is reported as implausible; it is
# the max_rate_per_min of the bottling filler tag map.
_PLAUSIBLE_RATE_PER_MIN = 60.0


@dataclass(frozen=True, slots=True)
class PublishedDay:
    """The line's own daily figures from the daily summary; product rows of one day are summed."""

    pause_time_dec: float
    operation_time_dec: float
    monitored_time_dec: float
    efficiency: float
    production_units: int
    product_types_l: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class HourCount:
    """Containers of one local clock hour: as recorded and as the replay counts them."""

    start_ms: int
    end_ms: int
    containers: int
    running_ms: int
    replayed: int


@dataclass(frozen=True, slots=True)
class BottlingDay:
    """One production day: windows, replayed stops and hourly counts in UTC epoch milliseconds."""

    date: date
    day_start_ms: int
    day_end_ms: int
    runs: tuple[tuple[int, int], ...]
    stops: tuple[tuple[int, int], ...]
    hours: tuple[HourCount, ...]
    published: PublishedDay

    @property
    def window(self) -> tuple[int, int]:
        """Production window: start of the first product run to the end of the last."""
        return self.runs[0][0], self.runs[-1][1]

    @property
    def monitored_ms(self) -> int:
        return sum(end - start for start, end in self.runs)

    @property
    def stopped_ms(self) -> int:
        return sum(end - start for start, end in self.stops)

    @property
    def running(self) -> tuple[tuple[int, int], ...]:
        """Intervals in which the replay shows the line producing."""
        return tuple(subtract_intervals(self.runs, self.stops))


@dataclass(frozen=True)
class BottlingRecording:
    """The bottling line recording, keyed by plant date, with its data-quality findings."""

    zone: str
    days: dict[date, BottlingDay]
    findings: list[Finding]

    @property
    def published(self) -> dict[date, PublishedDay]:
        return {day: record.published for day, record in self.days.items()}

    def select(self, *, first_days: int | None = None, start: date | None = None, end: date | None = None) -> BottlingRecording:
        """Return the production days from ``start`` to ``end`` (inclusive), at most ``first_days`` of them."""
        if first_days is not None and first_days < 1:
            raise ValueError(f"first_days={first_days} selects no production day; pass 1 or more")
        chosen = [
            record
            for day, record in self.days.items()
            if (start is None or day >= start) and (end is None or day <= end)
        ]
        if first_days is not None:
            chosen = chosen[:first_days]
        if not chosen:
            first, last = next(iter(self.days)), next(reversed(self.days))
            raise ValueError(
                f"no production day between {start or 'the first day'} and {end or 'the last day'}; "
                f"the recording has days from {first} to {last}; choose start and end dates in that range"
            )
        kept = {record.date.isoformat() for record in chosen}
        findings = [item for item in self.findings if item["date"] in kept]
        return replace(self, days={record.date: record for record in chosen}, findings=findings)


def load_bottling() -> BottlingRecording:
    """Load the shipped bottling line recording."""
    zone = ZoneInfo(BOTTLING_ZONE)
    findings: list[Finding] = []

    daily = _read_csv("daily_operation_summary.csv")
    rows_by_day: dict[date, list[dict[str, str]]] = defaultdict(list)
    for row in daily:
        rows_by_day[_excel_date(row["date"])].append(row)

    events_by_day: dict[date, list[dict[str, str]]] = defaultdict(list)
    for row in _read_csv("downtime_event_log.csv"):
        events_by_day[_excel_date(row["date"])].append(row)
    for day in sorted(set(events_by_day) - set(rows_by_day)):
        orphans = events_by_day[day]
        minutes = sum(float(row["downtime_time"]) for row in orphans) * 1440
        findings.append(
            finding(
                day,
                "events_without_summary_day",
                f"{len(orphans)} downtime events ({orphans[0]['downtime_id']} to {orphans[-1]['downtime_id']}, "
                f"{minutes:.1f} min) are dated a day without a daily summary row; they are not replayed",
            )
        )

    hourly_by_day: dict[date, list[dict[str, str]]] = defaultdict(list)
    for row in _read_csv("processed_hourly.csv"):
        hourly_by_day[_excel_date(row["date"])].append(row)
    for day in sorted(set(hourly_by_day) - set(rows_by_day)):
        findings.append(finding(day, "hourly_without_summary_day", "hourly container counts on a day without a daily summary row"))
    findings.extend(_breakdown_duplicates())

    days: dict[date, BottlingDay] = {}
    for day in sorted(rows_by_day):
        days[day] = _build_day(day, rows_by_day[day], events_by_day.get(day, []), hourly_by_day.get(day, []), zone, findings)

    findings.sort(key=lambda item: item["date"])
    return BottlingRecording(zone=BOTTLING_ZONE, days=days, findings=findings)


def _build_day(
    day: date,
    rows: list[dict[str, str]],
    events: list[dict[str, str]],
    hourly: list[dict[str, str]],
    zone: ZoneInfo,
    findings: list[Finding],
) -> BottlingDay:
    runs = sorted((_local_ms(day, row["production_start_time"], zone), _local_ms(day, row["production_end_time"], zone)) for row in rows)
    published = _published(rows)
    for row in rows:
        monitored, operation, pause = (float(row[key]) for key in ("monitored_time_dec", "operation_time_dec", "pause_time_dec"))
        if abs(monitored - operation - pause) > _HOURS_TOLERANCE:
            findings.append(
                finding(
                    day,
                    "published_hours_inconsistent",
                    f"product {row['product_type_l']} l: monitored {monitored:.4f} h != operation {operation:.4f} h "
                    f"+ pause {pause:.4f} h",
                )
            )

    stops = _replayed_stops(day, events, runs, zone, findings)
    stopped_h = sum(end - start for start, end in stops) / _HOUR_MS
    if not events and published.pause_time_dec > 0:
        findings.append(
            finding(day, "pause_without_events", f"published pause {published.pause_time_dec:.4f} h but no downtime event")
        )
    elif abs(stopped_h - published.pause_time_dec) > _HOURS_TOLERANCE:
        findings.append(
            finding(
                day,
                "pause_differs_from_events",
                f"replayed stops {stopped_h:.4f} h, published pause {published.pause_time_dec:.4f} h",
            )
        )

    hours = _hour_counts(day, hourly, runs, stops, zone, findings)
    counted = sum(hour.containers for hour in hours)
    if counted != published.production_units:
        findings.append(
            finding(
                day,
                "units_differ_from_hourly",
                f"hourly containers sum to {counted}, published production_units is {published.production_units}",
            )
        )
    day_start_ms, day_end_ms = plant_day_bounds_ms(day, zone)
    return BottlingDay(day, day_start_ms, day_end_ms, tuple(runs), tuple(stops), tuple(hours), published)


def _replayed_stops(
    day: date,
    events: list[dict[str, str]],
    runs: list[tuple[int, int]],
    zone: ZoneInfo,
    findings: list[Finding],
) -> list[tuple[int, int]]:
    """Clip each event to the product runs and merge overlaps; report what was cut or merged."""
    clipped: list[tuple[int, int, str]] = []
    for event in events:
        start = _local_ms(day, event["downtime_start_time"], zone)
        end = _local_ms(day, event["downtime_end_time"], zone)
        inside = [(max(start, run_start), min(end, run_end)) for run_start, run_end in runs if min(end, run_end) > max(start, run_start)]
        kept = sum(piece_end - piece_start for piece_start, piece_end in inside)
        label = f"{event['downtime_id']} {_clock(start, zone)}-{_clock(end, zone)}"
        if not inside:
            findings.append(finding(day, "event_outside_window", f"{label} lies outside the production window; not replayed"))
        elif kept < end - start:
            findings.append(
                finding(day, "event_clipped", f"{label} runs outside the production window; {(end - start - kept) / 1000:.0f} s cut")
            )
        clipped.extend((piece_start, piece_end, event["downtime_id"]) for piece_start, piece_end in inside)

    clipped.sort()
    covering_end, covering_id = -1, ""
    for start, end, event_id in clipped:
        if start < covering_end:
            findings.append(finding(day, "events_overlap", f"{event_id} starts inside {covering_id}; replayed as one stop"))
        if end > covering_end:
            covering_end, covering_id = end, event_id
    return merge_intervals([(start, end) for start, end, _ in clipped])


def _hour_counts(
    day: date,
    hourly: list[dict[str, str]],
    runs: list[tuple[int, int]],
    stops: list[tuple[int, int]],
    zone: ZoneInfo,
    findings: list[Finding],
) -> list[HourCount]:
    """Place each hour's containers in that hour's running time, or in the nearest hour that has some."""
    running = subtract_intervals(runs, stops)
    spans = []
    for row in sorted(hourly, key=lambda item: int(item["hour_start"])):
        start = _local_ms(day, int(row["hour_start"]) / 24, zone)
        end = _local_ms(day, int(row["hour_end"]) / 24, zone)
        spans.append((start, end, int(row["production_gallons"]), overlap_ms(running, start, end)))

    replayed = [count if run_ms > 0 else 0 for _, _, count, run_ms in spans]
    with_running = [index for index, span in enumerate(spans) if span[3] > 0]
    for index, (start, _, count, run_ms) in enumerate(spans):
        if count == 0 or run_ms > 0:
            continue
        if not with_running:
            replayed[index] = count
            continue
        target = min(with_running, key=lambda other: (abs(other - index), other))
        replayed[target] += count
        findings.append(
            finding(
                day,
                "containers_without_running_time",
                f"{count} containers in hour {_clock(start, zone)} which has no running time in the event log; "
                f"counted in hour {_clock(spans[target][0], zone)}",
            )
        )

    hours = []
    for (start, end, count, run_ms), placed in zip(spans, replayed):
        if placed and run_ms and placed / (run_ms / 60_000) > _PLAUSIBLE_RATE_PER_MIN:
            findings.append(
                finding(
                    day,
                    "containers_rate_implausible",
                    f"{placed} containers in {run_ms / 1000:.0f} s of running time in hour {_clock(start, zone)}",
                )
            )
        hours.append(HourCount(start, end, count, run_ms, placed))
    return hours


def _published(rows: list[dict[str, str]]) -> PublishedDay:
    pause = sum(float(row["pause_time_dec"]) for row in rows)
    operation = sum(float(row["operation_time_dec"]) for row in rows)
    monitored = sum(float(row["monitored_time_dec"]) for row in rows)
    if len(rows) == 1:
        efficiency = float(rows[0]["efficiency"])
    else:
        # Each row's efficiency is its operation / monitored time, so the day's is the ratio of the sums.
        efficiency = operation / monitored
    return PublishedDay(
        pause_time_dec=pause,
        operation_time_dec=operation,
        monitored_time_dec=monitored,
        efficiency=efficiency,
        production_units=sum(int(row["production_units"]) for row in rows),
        product_types_l=tuple(int(row["product_type_l"]) for row in rows),
    )


def _breakdown_duplicates() -> list[Finding]:
    seen: dict[tuple[date, str], int] = defaultdict(int)
    for row in _read_csv("hourly_operation_breakdown.csv"):
        seen[(_excel_date(row["date"]), row["hour_start"])] += 1
    return [
        finding(day, "hourly_breakdown_duplicate", f"hour {int(hour):02d}:00 has {count} rows in the hourly breakdown")
        for (day, hour), count in sorted(seen.items())
        if count > 1
    ]


def _read_csv(name: str) -> list[dict[str, str]]:
    return list(csv.DictReader(open_text(BOTTLING_FOLDER, name)))


def _excel_date(serial: str) -> date:
    return _EXCEL_EPOCH + timedelta(days=int(serial))


def _local_ms(day: date, fraction: str | float, zone: ZoneInfo) -> int:
    """Convert a fraction of local day ``day`` to UTC epoch milliseconds, rounded to the millisecond."""
    # Adding a timedelta to an aware datetime moves the wall clock, as the recording's times do.
    local = datetime(day.year, day.month, day.day, tzinfo=zone) + timedelta(milliseconds=round(float(fraction) * _DAY_MS))
    return epoch_ms(local)


def _clock(epoch_ms: int, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(epoch_ms // 1000, tz=zone).strftime("%H:%M:%S")
