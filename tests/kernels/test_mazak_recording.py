"""Mazak03 week (NIST SMS Test Bed): run time and powered time per plant day against the controller's own counters.

The controller publishes auto_time (seconds in automatic operation) and
total_time (seconds powered on). Replaying execution, mode and alarm items
through the shipped tag map must give the same run time and planned busy
time (all time with data) per America/New_York plant day within 1%.
"""

from __future__ import annotations

import pytest

from valuegate.adapters.tagmap import load_tag_map, shipped_tag_map_dir
from valuegate.edge.cli_oee import machine_days
from valuegate.edge.trace import TraceRow

TOLERANCE = 0.01


def _recording():
    try:
        from valuegate.simulators.recordings.files import RecordingNotFoundError
        from valuegate.simulators.recordings.mtconnect import load_mtconnect
    except ImportError as exc:
        pytest.skip(f"the Mazak03 recording loader is not installed (valuegate.simulators.recordings.mtconnect: {exc})")
    try:
        return load_mtconnect("mazak03")
    except RecordingNotFoundError as exc:
        pytest.skip(f"the Mazak03 recording is not shipped in this install: {exc}")


@pytest.fixture(scope="module")
def mazak_days():
    recording = _recording()
    tag_map = load_tag_map(shipped_tag_map_dir() / "demo" / "mazak-mtconnect-opcua.yaml")
    rows = []
    for event in recording.events:
        if not rows:
            # The recording emits alarm_code only when a Fault appears or clears; none is active at the start.
            rows.append(TraceRow(event.ts_us // 1000, "mazak03", "alarm_code", 0, "good"))
        status = "bad" if event.value is None else "good"
        rows.append(TraceRow(event.ts_us // 1000, "mazak03", event.item, event.value, status))
    rows.sort(key=lambda row: row.ts_ms)
    days = dict(machine_days(rows, tag_map, recording.zone))
    return recording, days


def test_recording_covers_five_plant_days(mazak_days):
    recording, days = mazak_days
    published = [day.isoformat() for day in recording.plant_days]
    assert published == ["2016-05-02", "2016-05-03", "2016-05-04", "2016-05-05", "2016-05-06"]
    assert set(published) <= set(days)


@pytest.mark.parametrize("counter", ["auto_time", "total_time"])
def test_daily_time_matches_controller_counter(mazak_days, counter):
    recording, days = mazak_days
    for day, counters in recording.published.items():
        kpis = days[day.isoformat()]
        measured_s = (kpis.run_min if counter == "auto_time" else kpis.planned_busy_min) * 60
        published_s = counters[counter].increment
        assert published_s > 0, f"{day}: {counter} did not advance"
        error = abs(measured_s - published_s) / published_s
        assert error <= TOLERANCE, f"{day}: {counter} rose {published_s:.0f} s, the state rules give {measured_s:.0f} s ({error:.2%} apart)"
