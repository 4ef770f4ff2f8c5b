"""Reporting windows on UTC instants: plant days and shifts in the plant's IANA time zone, calendar stops."""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from numpy.typing import NDArray

from ._jit import kernel
from .calendar import WEEKDAYS, ShiftCalendar, clock_minutes
from .intervals import Intervals, _check_intervals

__all__ = ("Windows", "zone", "local_ms", "plant_day_windows", "shift_windows", "calendar_stops", "apply_planned_stops")


class Windows(NamedTuple):
    """Labelled half-open windows ``[start_ms, end_ms)`` on UTC epoch milliseconds."""

    labels: list[str]
    start_ms: NDArray[np.int64]
    end_ms: NDArray[np.int64]


def zone(time_zone: str) -> ZoneInfo:
    """Return the IANA zone, raising ValueError with an example when the name is unknown."""
    try:
        return ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {time_zone!r}; pass an IANA name such as 'Asia/Shanghai' or 'Europe/Berlin'") from exc


def local_ms(day: dt.date, minutes: int, tz: ZoneInfo) -> int:
    """Return the UTC epoch ms of local ``day`` plus ``minutes`` (may pass midnight); a skipped time maps past the gap."""
    wall = dt.datetime.combine(day, dt.time()) + dt.timedelta(minutes=minutes)
    return round(wall.replace(tzinfo=tz).timestamp() * 1000)


def _dates(first: dt.date, last: dt.date) -> list[dt.date]:
    if last < first:
        raise ValueError(f"last date {last} is before first date {first}")
    return [first + dt.timedelta(days=offset) for offset in range((last - first).days + 1)]


def _windows(rows: list[tuple[str, int, int]]) -> Windows:
    rows.sort(key=lambda row: (row[1], row[2], row[0]))
    return Windows([row[0] for row in rows], np.array([row[1] for row in rows], np.int64), np.array([row[2] for row in rows], np.int64))


def plant_day_windows(time_zone: str, first: dt.date, last: dt.date) -> Windows:
    """Return one window per plant day, local midnight to local midnight, labelled ``YYYY-MM-DD``.

    Days that change to or from daylight saving time last 23 or 25 hours.
    """
    tz = zone(time_zone)
    return _windows([(day.isoformat(), local_ms(day, 0, tz), local_ms(day + dt.timedelta(days=1), 0, tz)) for day in _dates(first, last)])


def _shift_span(shift, day: dt.date, tz: ZoneInfo) -> tuple[int, int]:
    start = clock_minutes(shift.start)
    end = clock_minutes(shift.end)
    if end <= start:
        end += 24 * 60
    return local_ms(day, start, tz), local_ms(day, end, tz)


def shift_windows(calendar: ShiftCalendar, time_zone: str, first: dt.date, last: dt.date) -> Windows:
    """Return one window per shift that starts on a date in ``[first, last]``, labelled ``YYYY-MM-DD/name``.

    Windows span the whole shift on real UTC instants, so a night shift over a
    daylight-saving change is an hour shorter or longer; breaks stay inside.
    """
    tz = zone(time_zone)
    rows = []
    for day in _dates(first, last):
        for shift in calendar.shifts:
            if WEEKDAYS[day.weekday()] in shift.weekdays:
                start, end = _shift_span(shift, day, tz)
                rows.append((f"{day.isoformat()}/{shift.name}", start, end))
    return _windows(rows)


def _subtract(pieces: list[tuple[int, int]], cut_start: int, cut_end: int) -> list[tuple[int, int]]:
    out = []
    for start, end in pieces:
        if cut_end <= start or cut_start >= end:
            out.append((start, end))
            continue
        if start < cut_start:
            out.append((start, cut_start))
        if cut_end < end:
            out.append((cut_end, end))
    return out


def calendar_stops(calendar: ShiftCalendar, time_zone: str, start_ms: int, end_ms: int) -> Windows:
    """Return the planned downtime in ``[start_ms, end_ms)``: time outside shifts, breaks and no-order periods.

    Labels are ``no shift``, ``break <shift>`` and ``no order <reason>``;
    windows are sorted and do not overlap.
    """
    tz = zone(time_zone)
    first = dt.datetime.fromtimestamp(start_ms / 1000, tz).date() - dt.timedelta(days=1)
    last = dt.datetime.fromtimestamp(end_ms / 1000, tz).date()

    # Planned pieces: each shift minus its breaks; everything else in range is a stop.
    planned: list[tuple[int, int]] = []
    cuts: list[tuple[str, int, int]] = []
    for day in _dates(first, last):
        for shift in calendar.shifts:
            if WEEKDAYS[day.weekday()] not in shift.weekdays:
                continue
            shift_start, shift_end = _shift_span(shift, day, tz)
            planned.append((shift_start, shift_end))
            base = clock_minutes(shift.start)
            for pause in shift.breaks:
                pause_start = clock_minutes(pause.start)
                pause_end = clock_minutes(pause.end)
                if pause_start < base:
                    pause_start += 24 * 60
                while pause_end <= pause_start:
                    pause_end += 24 * 60
                cut_start, cut_end = local_ms(day, pause_start, tz), local_ms(day, pause_end, tz)
                cuts.append((f"break {shift.name}", max(cut_start, shift_start), min(cut_end, shift_end)))
    for period in calendar.no_order:
        cut_start = round(period.local_start().replace(tzinfo=tz).timestamp() * 1000)
        cut_end = round(period.local_end().replace(tzinfo=tz).timestamp() * 1000)
        cuts.append((f"no order {period.reason}".rstrip(), cut_start, cut_end))

    planned.sort()
    merged: list[tuple[int, int]] = []
    for start, end in planned:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))

    effective = merged
    for _label, cut_start, cut_end in cuts:
        effective = _subtract(effective, cut_start, cut_end)
    free = [(start_ms, end_ms)]
    for start, end in effective:
        free = _subtract(free, start, end)

    # Label each stop by what removed the time at its start: a cut inside a shift, else no shift.
    rows = []
    for start, end in free:
        if start >= end:
            continue
        in_shift = any(left <= start < right for left, right in merged)
        label = next((name for name, left, right in cuts if in_shift and left <= start < right), "no shift")
        rows.append((label, start, end))
    return _windows(rows)


@kernel
def _overlay(start, end, state, reason, stop_start, stop_end, out_start, out_end, out_state, out_reason):
    count = 0
    j = 0
    n_stops = stop_start.shape[0]
    for i in range(start.shape[0]):
        left = start[i]
        right = end[i]
        while left < right:
            while j < n_stops and stop_end[j] <= left:
                j += 1
            inside = j < n_stops and stop_start[j] <= left
            if inside:
                piece_end = min(right, stop_end[j])
            elif j < n_stops:
                piece_end = min(right, stop_start[j])
            else:
                piece_end = right
            s = state[i]
            r = reason[i]
            # Running in planned downtime stays running: the machine made parts then.
            if inside and s != 0:
                s = 2
                r = -1
            if count > 0 and out_end[count - 1] == left and out_state[count - 1] == s and out_reason[count - 1] == r:
                out_end[count - 1] = piece_end
            else:
                out_start[count] = left
                out_end[count] = piece_end
                out_state[count] = s
                out_reason[count] = r
                count += 1
            left = piece_end
    return count


def apply_planned_stops(iv: Intervals, stops: Windows) -> Intervals:
    """Turn every state but ``running`` inside the ``stops`` windows into ``planned_stop`` (reason -1).

    ``stops`` usually comes from :func:`calendar_stops`: time outside shifts,
    breaks and no-order periods is then planned downtime and leaves planned
    busy time, and missing data there is no longer counted as offline.
    """
    checked = _check_intervals(iv)
    stop_start = np.ascontiguousarray(stops.start_ms, np.int64)
    stop_end = np.ascontiguousarray(stops.end_ms, np.int64)
    if stop_start.size and (np.any(stop_start[1:] < stop_end[:-1]) or np.any(stop_end < stop_start)):
        raise ValueError("stops must be sorted, non-overlapping windows; build them with calendar_stops()")
    size = len(checked.start_ms) + 2 * stop_start.shape[0] + 1
    out = Intervals(np.empty(size, np.int64), np.empty(size, np.int64), np.empty(size, np.int8), np.empty(size, np.int32))
    count = _overlay(*checked, stop_start, stop_end, *out)
    return Intervals(*(column[:count].copy() for column in out))
