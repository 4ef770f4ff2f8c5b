"""Plant days, shift windows and calendar stops on UTC instants, across daylight-saving changes."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from valuegate.adapters.errors import ConfigError
from valuegate.edge.kernels import Intervals, apply_planned_stops, calendar_stops, load_calendar, parse_calendar, plant_day_windows, shift_windows
from valuegate.edge.kernels.windows import Windows

from . import reference

HOUR = 3_600_000


def _utc_ms(text: str) -> int:
    return round(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp() * 1000)


def _calendar(**extra):
    data = {
        "schema": "valuegate/calendar/v1",
        "name": "three shifts",
        "shifts": [
            {"name": "early", "start": "06:00", "end": "14:00", "weekdays": ["mon", "tue", "wed", "thu", "fri"], "breaks": [{"start": "10:00", "end": "10:30"}]},
            {"name": "night", "start": "22:00", "end": "06:00", "breaks": [{"start": "02:00", "end": "02:30"}]},
        ],
    }
    data.update(extra)
    return parse_calendar(data)


def test_plant_day_with_spring_forward_is_23_hours():
    days = plant_day_windows("Europe/Berlin", dt.date(2024, 3, 30), dt.date(2024, 4, 1))
    assert days.labels == ["2024-03-30", "2024-03-31", "2024-04-01"]
    assert (days.end_ms - days.start_ms).tolist() == [24 * HOUR, 23 * HOUR, 24 * HOUR]
    assert days.start_ms[1] == _utc_ms("2024-03-30T23:00:00")
    assert days.end_ms[1] == _utc_ms("2024-03-31T22:00:00")


def test_plant_day_with_fall_back_is_25_hours():
    days = plant_day_windows("Europe/Berlin", dt.date(2024, 10, 27), dt.date(2024, 10, 27))
    assert (days.end_ms - days.start_ms).tolist() == [25 * HOUR]


def test_night_shift_over_spring_forward_has_7_hours():
    shifts = shift_windows(_calendar(), "Europe/Berlin", dt.date(2024, 3, 30), dt.date(2024, 3, 30))
    assert shifts.labels == ["2024-03-30/night"]
    assert shifts.start_ms[0] == _utc_ms("2024-03-30T21:00:00")
    assert shifts.end_ms[0] == _utc_ms("2024-03-31T04:00:00")
    assert int(shifts.end_ms[0] - shifts.start_ms[0]) == 7 * HOUR


def test_shift_weekdays_follow_the_start_date():
    shifts = shift_windows(_calendar(), "Europe/Berlin", dt.date(2024, 4, 1), dt.date(2024, 4, 1))
    assert shifts.labels == ["2024-04-01/early", "2024-04-01/night"]


def test_calendar_stops_cover_breaks_and_time_without_shifts():
    calendar = _calendar()
    start, end = _utc_ms("2024-04-01T00:00:00"), _utc_ms("2024-04-02T00:00:00")  # Monday, CEST = UTC+2
    stops = calendar_stops(calendar, "Europe/Berlin", start, end)
    spans = list(zip(stops.labels, stops.start_ms.tolist(), stops.end_ms.tolist(), strict=True))
    assert spans == [
        ("break night", _utc_ms("2024-04-01T00:00:00"), _utc_ms("2024-04-01T00:30:00")),
        ("break early", _utc_ms("2024-04-01T08:00:00"), _utc_ms("2024-04-01T08:30:00")),
        ("no shift", _utc_ms("2024-04-01T12:00:00"), _utc_ms("2024-04-01T20:00:00")),
    ]


def test_no_order_period_is_planned_downtime():
    calendar = _calendar(no_order=[{"start": "2024-04-01T00:00", "end": "2024-04-02T00:00", "reason": "Easter Monday"}])
    start, end = _utc_ms("2024-03-31T22:00:00"), _utc_ms("2024-04-01T22:00:00")
    stops = calendar_stops(calendar, "Europe/Berlin", start, end)
    assert int((stops.end_ms - stops.start_ms).sum()) == 24 * HOUR
    assert "no order Easter Monday" in stops.labels


def test_planned_stops_replace_all_but_running():
    iv = Intervals(np.array([0, 100, 200], np.int64), np.array([100, 200, 300], np.int64), np.array([3, 0, 5], np.int8), np.array([4, -1, -1], np.int32))
    stops = Windows(["break"], np.array([50], np.int64), np.array([250], np.int64))
    out = apply_planned_stops(iv, stops)
    rows = [tuple(int(column[i]) for column in out) for i in range(out.start_ms.shape[0])]
    assert rows == [(0, 50, 3, 4), (50, 100, 2, -1), (100, 200, 0, -1), (200, 250, 2, -1), (250, 300, 5, -1)]


@settings(derandomize=True, max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 300), st.integers(0, 5), st.integers(-1, 2)), max_size=12),
    st.lists(st.tuples(st.integers(0, 200), st.integers(1, 200)), max_size=6),
)
def test_planned_stops_match_reference(pieces, gaps):
    rows, t = [], 0
    for length, s, r in pieces:
        rows.append((t, t + length, s, r))
        t += length
    stop_rows, cursor = [], 0
    for gap, length in gaps:
        cursor += gap
        stop_rows.append((cursor, cursor + length))
        cursor += length
    iv = Intervals(*(np.array(col, dtype) for col, dtype in zip(zip(*rows, strict=True) if rows else [[], [], [], []], (np.int64, np.int64, np.int8, np.int32), strict=True)))
    stops = Windows(["stop"] * len(stop_rows), np.array([s for s, _ in stop_rows], np.int64), np.array([e for _, e in stop_rows], np.int64))
    out = apply_planned_stops(iv, stops)
    got = [tuple(int(column[i]) for column in out) for i in range(out.start_ms.shape[0])]

    states, reasons = reference.timeline_from_intervals(rows, 0, t)
    for left, right in stop_rows:
        a, b = min(left, t), min(right, t)
        inside = slice(a, b)
        replace = states[inside] != 0
        states[inside] = np.where(replace, 2, states[inside])
        reasons[inside] = np.where(replace, -1, reasons[inside])
    assert got == reference.run_length(states, reasons, 0)


def test_calendar_file_errors_name_field_and_line(tmp_path):
    path = tmp_path / "calendar.yaml"
    path.write_text("schema: valuegate/calendar/v1\nname: x\nshifts:\n  - {name: a, start: '25:00', end: '06:00'}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"calendar.yaml:4: \$.shifts\[0\].start: not a local time"):
        load_calendar(path)


def test_unknown_time_zone_is_named():
    with pytest.raises(ValueError, match="unknown time zone 'Europe/Nowhere'"):
        plant_day_windows("Europe/Nowhere", dt.date(2024, 1, 1), dt.date(2024, 1, 1))


def _planned_busy_hours(calendar, windows: Windows, time_zone: str) -> list[float]:
    """Sum planned busy time per window for a machine that is idle all along, so that every calendar stop applies."""
    from valuegate.edge.kernels import kpis, minute_table, state_intervals, totals_from_columns, window_totals

    start, end = int(windows.start_ms.min()) - 6 * HOUR, int(windows.end_ms.max()) + 6 * HOUR
    iv = state_intervals([start], [1], [-1], end, start_ms=start)
    if calendar is not None:
        iv = apply_planned_stops(iv, calendar_stops(calendar, time_zone, start, end))
    table = minute_table(iv, start, (end - start) // 60_000, 0)
    sums = window_totals(table.minute_ms, table.state_ms, windows.start_ms, windows.end_ms)
    return [kpis(totals_from_columns(row)).planned_busy_min / 60 for row in sums]


def test_night_shift_planned_busy_time_over_spring_forward():
    calendar = parse_calendar({"schema": "valuegate/calendar/v1", "name": "nights", "shifts": [{"name": "night", "start": "22:00", "end": "06:00"}]})
    shifts = shift_windows(calendar, "Europe/Berlin", dt.date(2024, 3, 30), dt.date(2024, 3, 31))
    assert shifts.labels == ["2024-03-30/night", "2024-03-31/night"]
    assert _planned_busy_hours(calendar, shifts, "Europe/Berlin") == [7.0, 8.0]


def test_plant_day_planned_busy_time_without_calendar():
    days = plant_day_windows("Europe/Berlin", dt.date(2024, 3, 31), dt.date(2024, 3, 31))
    assert _planned_busy_hours(None, days, "Europe/Berlin") == [23.0]


def test_breaks_and_no_order_leave_planned_busy_time():
    calendar = _calendar(no_order=[{"start": "2024-04-02T06:00", "end": "2024-04-02T14:00", "reason": "no orders"}])
    shifts = shift_windows(calendar, "Europe/Berlin", dt.date(2024, 4, 1), dt.date(2024, 4, 2))
    assert shifts.labels == ["2024-04-01/early", "2024-04-01/night", "2024-04-02/early", "2024-04-02/night"]
    assert _planned_busy_hours(calendar, shifts, "Europe/Berlin") == [7.5, 7.5, 0.0, 7.5]
