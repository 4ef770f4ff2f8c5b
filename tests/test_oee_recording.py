"""`valuegate oee recording:NAME`: KPIs per plant day of a shipped recording, checked against the raw recording files.

The expected figures are read here straight from the shipped files
(SHDR lines and CSV rows), not through the simulators' loaders.
"""

from __future__ import annotations

import gzip
import json
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from tests.recorded import bottling_window_and_stops
from valuegate.cli import app

RECORDINGS = Path(__file__).resolve().parent.parent / "simulators" / "recordings"
NEW_YORK = ZoneInfo("America/New_York")
MAZAK_DAYS = [date(2016, 5, day) for day in range(2, 7)]
BOTTLING_DAYS = [date(2022, 7, 22), date(2022, 7, 26), date(2022, 8, 1)]
RUNNER = CliRunner()


def _oee(*args: str) -> dict[str, dict]:
    result = RUNNER.invoke(app, ["oee", *args, "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    [machine] = document["machines"]
    return {day["date"]: day for day in machine["days"]}


def _shdr_increments(item: str) -> dict[date, float]:
    """Return, per New York plant day, the last reading of ``item`` minus the first, from the raw Mazak03 SHDR lines."""
    readings: dict[date, list[float]] = {}
    for path in sorted((RECORDINGS / "nist-mazak03-week").glob("Mazak03-*.txt.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                fields = line.rstrip("\n").split("|")
                day = datetime.fromisoformat(fields[0].replace("Z", "+00:00")).astimezone(NEW_YORK).date()
                for name, value in zip(fields[1::2], fields[2::2], strict=False):
                    if name == item and value != "UNAVAILABLE":
                        readings.setdefault(day, []).append(float(value))
    return {day: values[-1] - values[0] for day, values in readings.items()}


@pytest.fixture(scope="module")
def mazak() -> dict[str, dict]:
    # No --tz: a recording's plant days are counted in its own zone (America/New_York for the NIST test bed).
    return _oee("recording:mazak03", "--map", "demo/mazak-mtconnect-opcua")


def test_mazak_covers_the_recorded_days(mazak):
    assert sorted(mazak) == [day.isoformat() for day in MAZAK_DAYS]


@pytest.mark.parametrize("day", MAZAK_DAYS, ids=str)
def test_mazak_run_time_matches_auto_time(mazak, day):
    auto_time_s = _shdr_increments("auto_time")[day]
    assert auto_time_s > 3600, f"{day}: auto_time rose only {auto_time_s} s; the check needs a working day"
    run_s = mazak[day.isoformat()]["run_min"] * 60
    assert run_s == pytest.approx(auto_time_s, rel=0.01)


@pytest.mark.parametrize("day", MAZAK_DAYS, ids=str)
def test_mazak_planned_time_matches_total_time(mazak, day):
    total_time_s = _shdr_increments("total_time")[day]
    assert mazak[day.isoformat()]["planned_min"] * 60 == pytest.approx(total_time_s, rel=0.01)


def test_time_zone_option_moves_the_plant_days(mazak):
    # Cut in Shanghai time (12 h ahead of New York in May), the week spans six plant days. The week's totals stay the same.
    shanghai = _oee("recording:mazak03", "--map", "demo/mazak-mtconnect-opcua", "--tz", "Asia/Shanghai")
    assert sorted(shanghai) == [*(day.isoformat() for day in MAZAK_DAYS), "2016-05-07"]
    assert shanghai["2016-05-02"]["run_min"] < mazak["2016-05-02"]["run_min"]
    for figure in ("planned_min", "run_min"):
        assert sum(day[figure] for day in shanghai.values()) == pytest.approx(sum(day[figure] for day in mazak.values()), abs=1e-4)


def test_bottling_downtime_is_the_logged_stops():
    days = _oee("recording:bottling", "--map", "demo/bottling-filler-modbus")
    for day in BOTTLING_DAYS:
        window_min, stop_min = bottling_window_and_stops(day)
        computed = days[day.isoformat()]
        assert computed["planned_min"] == pytest.approx(window_min, abs=0.02), day
        assert computed["downtime_min"] == pytest.approx(stop_min, abs=0.02), day
        assert computed["run_min"] == pytest.approx(window_min - stop_min, abs=0.02), day
    # A day without a production window (2022-07-23, a Saturday) has no planned time.
    assert days["2022-07-23"]["planned_min"] == 0.0


def test_unknown_recording_names_the_choices():
    result = RUNNER.invoke(app, ["oee", "recording:mazak3", "--map", "demo/mazak-mtconnect-opcua"])
    assert result.exit_code == 2
    assert "unknown recording 'mazak3'" in result.stderr
    assert "bottling, mazak03, hurco02, hurco04" in result.stderr


def test_bare_recording_name_suggests_the_scheme(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = RUNNER.invoke(app, ["oee", "mazak03", "--map", "demo/mazak-mtconnect-opcua"])
    assert result.exit_code == 2
    assert "write recording:mazak03" in result.stderr


def test_file_named_like_scheme_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("recording:mazak03").write_text(
        "timestamp,tag,value\n2024-01-01T00:00:00Z,state,1\n2024-01-01T00:00:00Z,reason,0\n2024-01-01T01:00:00Z,state,1\n",
        encoding="utf-8",
    )
    days = _oee("recording:mazak03", "--map", "demo/bottling-filler-modbus")
    assert days["2024-01-01"]["run_min"] == 60.0
