"""Loaders of the shipped recordings, checked against figures computed here straight from the files."""

from __future__ import annotations

import csv
import gzip
import hashlib
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from valuegate.simulators.recordings import load_bottling, load_mtconnect

RECORDINGS = Path(__file__).resolve().parents[2] / "simulators" / "recordings"
SAO_PAULO = ZoneInfo("America/Sao_Paulo")
NEW_YORK = ZoneInfo("America/New_York")


def _csv_rows(name: str) -> list[dict[str, str]]:
    with gzip.open(RECORDINGS / "bottling-line" / (name + ".gz"), "rt", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _excel_serial(day: date) -> str:
    return str((day - date(1899, 12, 30)).days)


def _utc_ms(day: date, fraction: str) -> int:
    local = datetime(day.year, day.month, day.day, tzinfo=SAO_PAULO) + timedelta(milliseconds=round(float(fraction) * 86_400_000))
    return round(local.timestamp() * 1000)


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


# Git blob ids of the files in usnistgov/smstestbed, as published with the data.
NIST_BLOBS = {
    "nist-mazak03-week/Mazak03-20160502-20160503.txt": "88312c5166c226827f0a7f42292f828a21eca64a",
    "nist-mazak03-week/Mazak03-20160503-20160504.txt": "93dae78fb424249c94448f0e2b686cda7bf11d7b",
    "nist-mazak03-week/Mazak03-20160504-20160505.txt": "b269eed7578eb1977949bd46417a2d878ee4ec56",
    "nist-mazak03-week/Mazak03-20160505-20160506.txt": "ed22babe6725b53cc0e42609e52b25af5911988e",
    "nist-mazak03-week/Mazak03-20160506-20160507.txt": "3ffdb78b784009ae03ef937d927afaa65dcdcfed",
    "nist-mazak03-week/Devices.xml": "a75dc47cac517a2478bc16ce0daa90806893ed9c",
    "nist-hurco-mtc/2-1-2017-Hurco02-Clean.txt": "ed3e50df02c22b6a3f3ebf24f3b90d7d1d59307b",
    "nist-hurco-mtc/2-1-2017-Hurco04-Clean.txt": "3ff11dc7ff4a90275d75bf912f973f65dca7b517",
    "nist-hurco-mtc/Devices.xml": "a75dc47cac517a2478bc16ce0daa90806893ed9c",
}


@pytest.mark.parametrize("name", sorted(NIST_BLOBS))
def test_nist_files_keep_original_bytes(name: str) -> None:
    data = gzip.decompress((RECORDINGS / (name + ".gz")).read_bytes())
    assert _git_blob_sha1(data) == NIST_BLOBS[name]


def test_every_recording_has_notice_and_source() -> None:
    notice = (RECORDINGS / "NOTICE").read_text(encoding="utf-8")
    assert "10.5281/zenodo.18146866" in notice
    assert "Gabriel Augusto David" in notice
    assert "Data: NIST Smart Manufacturing Systems Test Bed (usnistgov/smstestbed)" in notice
    for folder in ("bottling-line", "nist-mazak03-week", "nist-hurco-mtc"):
        assert (RECORDINGS / folder / "SOURCE.md").is_file()


def test_bottling_published_figures_2022_07_22() -> None:
    day = date(2022, 7, 22)
    rows = [row for row in _csv_rows("daily_operation_summary.csv") if row["date"] == _excel_serial(day)]
    assert len(rows) == 1
    published = load_bottling().published[day]

    assert published.pause_time_dec == float(rows[0]["pause_time_dec"])
    assert published.operation_time_dec == float(rows[0]["operation_time_dec"])
    assert published.efficiency == float(rows[0]["efficiency"])
    assert published.monitored_time_dec == float(rows[0]["monitored_time_dec"])
    assert published.production_units == int(rows[0]["production_units"])
    assert round(published.pause_time_dec, 4) == 3.7503
    assert round(published.operation_time_dec, 4) == 5.0638
    assert round(published.efficiency, 4) == 0.5745


def test_bottling_two_product_rows_combined() -> None:
    day = date(2022, 9, 28)
    rows = [row for row in _csv_rows("daily_operation_summary.csv") if row["date"] == _excel_serial(day)]
    assert len(rows) == 2
    record = load_bottling().days[day]

    operation = sum(float(row["operation_time_dec"]) for row in rows)
    monitored = sum(float(row["monitored_time_dec"]) for row in rows)
    assert record.published.operation_time_dec == pytest.approx(operation, abs=1e-12)
    assert record.published.pause_time_dec == pytest.approx(sum(float(row["pause_time_dec"]) for row in rows), abs=1e-12)
    assert record.published.efficiency == pytest.approx(operation / monitored, abs=1e-12)
    assert record.published.production_units == 406 + 146
    assert len(record.runs) == 2
    assert record.monitored_ms == pytest.approx(monitored * 3_600_000, abs=5)


def test_bottling_stops_clipped_to_window() -> None:
    day = date(2022, 7, 22)
    row = next(row for row in _csv_rows("daily_operation_summary.csv") if row["date"] == _excel_serial(day))
    window = (_utc_ms(day, row["production_start_time"]), _utc_ms(day, row["production_end_time"]))
    expected = []
    for event in _csv_rows("downtime_event_log.csv"):
        if event["date"] != _excel_serial(day):
            continue
        start = max(window[0], _utc_ms(day, event["downtime_start_time"]))
        end = min(window[1], _utc_ms(day, event["downtime_end_time"]))
        if end > start:
            expected.append((start, end))
    expected.sort()
    merged: list[tuple[int, int]] = []
    for start, end in expected:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))

    record = load_bottling().days[day]
    assert record.window == window
    assert list(record.stops) == merged
    # downtime_070 runs 12.5 minutes past the end of the window and is cut there.
    assert record.stops[-1][1] == window[1]


def test_bottling_hourly_containers_and_offsets() -> None:
    recording = load_bottling()
    rows = _csv_rows("processed_hourly.csv")
    assert sum(hour.containers for day in recording.days.values() for hour in day.hours) == sum(int(row["production_gallons"]) for row in rows)
    assert sum(hour.replayed for day in recording.days.values() for hour in day.hours) == 60_692
    first_hour = recording.days[date(2022, 7, 22)].hours[0]
    # Plant time is UTC-3: 11:00 in Sao Paulo is 14:00 UTC.
    assert first_hour.start_ms == int(datetime(2022, 7, 22, 14, tzinfo=timezone.utc).timestamp() * 1000)
    assert first_hour.containers == 3
    assert first_hour.replayed == 0


def test_bottling_findings() -> None:
    findings = load_bottling().findings
    kinds = defaultdict(set)
    for item in findings:
        assert set(item) == {"date", "kind", "detail"}
        kinds[item["kind"]].add(item["date"])

    assert kinds["events_without_summary_day"] == {"2022-01-13"}
    assert kinds["pause_without_events"] == {"2022-10-28", "2023-01-13"}
    assert "2022-07-26" in kinds["event_outside_window"]
    assert "2022-11-28" in kinds["events_overlap"]
    assert "2022-07-22" in kinds["event_clipped"]
    assert kinds["units_differ_from_hourly"] == {"2022-09-22", "2022-10-10", "2022-10-24", "2022-10-25"}
    assert kinds["hourly_breakdown_duplicate"] == {"2022-09-20"}
    outside_0726 = [item for item in findings if item["kind"] == "event_outside_window" and item["date"] == "2022-07-26"]
    assert len(outside_0726) == 7


def test_bottling_select_slices() -> None:
    recording = load_bottling()
    assert list(recording.select(first_days=2).days) == [date(2022, 7, 22), date(2022, 7, 26)]
    chosen = recording.select(start=date(2022, 10, 20), end=date(2022, 10, 25))
    assert list(chosen.days) == [date(2022, 10, 20), date(2022, 10, 24), date(2022, 10, 25)]
    assert all(item["date"] in {"2022-10-20", "2022-10-24", "2022-10-25"} for item in chosen.findings)
    with pytest.raises(ValueError, match="no production day between 2021-01-01"):
        recording.select(start=date(2021, 1, 1), end=date(2021, 2, 1))
    with pytest.raises(ValueError, match="first_days=0"):
        recording.select(first_days=0)


def _shdr_counter_increments(day: date, item: str) -> float:
    """Last minus first reading of ``item`` within plant day ``day`` (New York), from the raw lines."""
    begin = datetime(day.year, day.month, day.day, tzinfo=NEW_YORK)
    end = begin + timedelta(days=1)
    values = []
    for path in sorted((RECORDINGS / "nist-mazak03-week").glob("Mazak03-*.txt.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                fields = line.rstrip("\n").split("|")
                if len(fields) >= 3 and fields[1] == item and fields[2] != "UNAVAILABLE":
                    moment = datetime.strptime(fields[0], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
                    if begin <= moment < end:
                        values.append(float(fields[2]))
    return values[-1] - values[0]


def test_mazak_published_increments_2016_05_03() -> None:
    day = date(2016, 5, 3)
    published = load_mtconnect("mazak03").published[day]
    auto_time = _shdr_counter_increments(day, "auto_time")
    total_time = _shdr_counter_increments(day, "total_time")

    assert auto_time == 13_541
    assert total_time == 40_423
    assert published["auto_time"].increment == auto_time
    assert published["total_time"].increment == total_time
    # total_time also rose by 52 s between the previous evening's last reading and the first of this day.
    assert published["total_time"].rise == total_time + 52


def test_mazak_timeline_and_alarms() -> None:
    recording = load_mtconnect("mazak03")
    assert recording.plant_days == [date(2016, 5, day) for day in range(2, 7)]
    executions = [event for event in recording.events if event.item == "execution"]
    raw_count = 0
    for path in sorted((RECORDINGS / "nist-mazak03-week").glob("Mazak03-*.txt.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            raw_count += sum(1 for line in handle if line.split("|")[1:2] == ["execution"])
    assert len(executions) == raw_count
    codes = [event.value for event in recording.events if event.item == "alarm_code"]
    # Fault conditions 1102 INTERFERE, 763 START PROCESS ILLEGAL (three times), 610 and 1102, each cleared again.
    assert [code for code in codes if code] == [1102, 763, 763, 763, 610, 1102]
    assert codes.count(0) == 6
    kinds = {item["kind"] for item in recording.findings}
    assert "part_count_constant" in kinds
    assert "counter_rose_while_unavailable" in kinds


def test_hurco_part_count_against_completions() -> None:
    recording = load_mtconnect("hurco02")
    counts = recording.published[date(2017, 2, 2)]["part_count"]
    assert (counts.first, counts.last, counts.rise) == (1910, 1917, 8)
    assert {event.item for event in recording.events} >= {"execution", "part_count", "program"}
    hurco04 = load_mtconnect("hurco04")
    finding = next(item for item in hurco04.findings if item["kind"] == "part_count_differs_from_completed")
    assert finding["date"] == "2017-02-01"
    assert "rose by 10" in finding["detail"]


def test_unknown_recording_named() -> None:
    with pytest.raises(ValueError, match="unknown MTConnect recording 'mazak99'; choose one of mazak03, hurco02, hurco04"):
        load_mtconnect("mazak99")


def test_recordings_in_package_build(tmp_path: Path) -> None:
    """The files a wheel is made of (setuptools build_py) include every recording and its notice."""
    import subprocess
    import sys

    root = RECORDINGS.parents[1]
    script = "import sys\nfrom setuptools import setup\nsys.argv = ['setup.py', '-q', 'build_py', '--build-lib', sys.argv[1]]\nsetup()\n"
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=root, check=True, capture_output=True)
    built = tmp_path / "valuegate" / "simulators" / "recordings"
    for expected in [
        "NOTICE",
        "bottling-line/downtime_event_log.csv.gz",
        "bottling-line/daily_operation_summary.csv.gz",
        "bottling-line/processed_hourly.csv.gz",
        "bottling-line/SOURCE.md",
        "nist-mazak03-week/Mazak03-20160503-20160504.txt.gz",
        "nist-mazak03-week/SOURCE.md",
        "nist-hurco-mtc/2-1-2017-Hurco04-Clean.txt.gz",
        "nist-hurco-mtc/SOURCE.md",
        "bottling.py",
    ]:
        assert (built / expected).is_file(), expected
