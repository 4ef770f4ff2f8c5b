"""`valuegate oee`: KPIs per machine and plant day from CSV and Parquet traces, and its error messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from valuegate.edge import cli_oee

RUNNER = CliRunner()


def _app() -> typer.Typer:
    """Return a command line with only the oee command, registered the way the root command line does it."""
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Keep `oee` a subcommand."""

    cli_oee.register(app)
    return app


APP = _app()

FILLER_ROWS = """timestamp,tag,value,machine
2024-03-31T06:00:00+02:00,state,1,filler
2024-03-31T06:00:00+02:00,reason,0,filler
2024-03-31T06:00:00+02:00,containers,65000,filler
2024-03-31T07:00:00+02:00,state,2,filler
2024-03-31T07:00:00+02:00,reason,17,filler
2024-03-31T07:10:00+02:00,state,1,filler
2024-03-31T08:00:00+02:00,containers,764,filler
2024-03-31T08:00:00+02:00,state,0,filler
1711868400000,state,0,filler
"""


def _write(tmp_path: Path, text: str, name: str = "trace.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _run(*args: str):
    return RUNNER.invoke(APP, ["oee", *args])


def _days(result) -> list[dict]:
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    return document["machines"][0]["days"]


def test_filler_day_by_hand(tmp_path):
    # Running 06:00-07:00 and 07:10-08:00, stopped for reason 17 from 07:00 to 07:10, then no production scheduled.
    # The 16-bit counter wraps from 65000 to 764: 1300 containers at 2.7 s ideal = 3510 s against 6600 s running.
    result = _run(str(_write(tmp_path, FILLER_ROWS)), "--map", "bottling-filler-modbus", "--tz", "Europe/Berlin", "--json")
    days = _days(result)
    assert [day["date"] for day in days] == ["2024-03-31"]
    day = days[0]
    assert day["planned_min"] == 120.0
    assert day["run_min"] == 110.0
    assert day["downtime_min"] == 10.0
    assert day["availability"] == round(110 / 120, 6)
    assert day["effectiveness"] == round(3510 / 6600, 6)
    assert day["quality"] == 1.0
    assert day["oee"] == round(110 / 120 * 3510 / 6600, 6)
    assert day["mtbf_min"] == 110.0
    assert day["mttr_min"] == 10.0
    assert day["downtime_by_reason"] == {"17": 10.0}
    # The day has 23 hours (summer time begins): no data 00:00-06:00 (5 h) and after the last row at 09:00 (15 h) is offline.
    assert (day["produced"], day["reject"], day["offline_min"], day["idle_min"], day["changeover_min"]) == (1300, 0, 1200.0, 0.0, 0.0)


def test_calendar_break_is_planned_downtime(tmp_path):
    calendar = _write(
        tmp_path,
        "schema: valuegate/calendar/v1\nname: early\nshifts:\n  - {name: early, start: '06:00', end: '14:00', breaks: [{start: '07:00', end: '07:10'}]}\n",
        "calendar.yaml",
    )
    result = _run(str(_write(tmp_path, FILLER_ROWS)), "--map", "bottling-filler-modbus", "--tz", "Europe/Berlin", "--calendar", str(calendar), "--json")
    day = _days(result)[0]
    assert day["planned_min"] == 110.0
    assert day["downtime_min"] == 0.0
    assert day["availability"] == 1.0
    assert day["mtbf_min"] is None
    assert day["why"]["mtbf_min"] == "no unplanned stop began in the window"


def test_parquet_matches_csv(tmp_path):
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.csv
    import pyarrow.parquet

    csv_path = _write(tmp_path, FILLER_ROWS)
    table = pyarrow.csv.read_csv(csv_path, convert_options=pyarrow.csv.ConvertOptions(column_types={"timestamp": pyarrow.string(), "value": pyarrow.string()}))
    parquet_path = tmp_path / "trace.parquet"
    pyarrow.parquet.write_table(table, parquet_path)
    from_csv = _days(_run(str(csv_path), "--map", "bottling-filler-modbus", "--tz", "Europe/Berlin", "--json"))
    from_parquet = _days(_run(str(parquet_path), "--map", "bottling-filler-modbus", "--tz", "Europe/Berlin", "--json"))
    assert from_parquet == from_csv


def test_missing_reason_tag_leaves_stops_unassigned(tmp_path):
    # The by-hand day without its reason rows: the same times, the 10-minute stop without a reason, and a note saying why.
    rows = "".join(line + "\n" for line in FILLER_ROWS.splitlines() if ",reason," not in line)
    result = _run(str(_write(tmp_path, rows)), "--map", "bottling-filler-modbus", "--tz", "Europe/Berlin", "--json")
    day = _days(result)[0]
    assert (day["planned_min"], day["run_min"], day["downtime_min"]) == (120.0, 110.0, 10.0)
    assert day["downtime_by_reason"] == {"unassigned": 10.0}
    notes = json.loads(result.stdout)["notes"]
    assert [note["tags"] for note in notes if note["kind"] == "missing_reason_tags"] == [["reason"]]


def test_no_reason_code_is_unassigned(tmp_path):
    # The by-hand day with reason 0, which the bottling map names as no reason: the same times, the stop unassigned.
    rows = FILLER_ROWS.replace("07:00:00+02:00,reason,17", "07:00:00+02:00,reason,0")
    day = _days(_run(str(_write(tmp_path, rows)), "--map", "bottling-filler-modbus", "--tz", "Europe/Berlin", "--json"))[0]
    assert (day["planned_min"], day["run_min"], day["downtime_min"], day["mttr_min"]) == (120.0, 110.0, 10.0, 10.0)
    assert day["downtime_by_reason"] == {"unassigned": 10.0}


def test_parquet_timestamp_without_zone_is_named(tmp_path):
    pyarrow = pytest.importorskip("pyarrow")
    import datetime as dt

    import pyarrow.parquet

    table = pyarrow.table({"timestamp": [dt.datetime(2024, 3, 4, 8, 0)], "tag": ["state"], "value": ["1"]})
    path = tmp_path / "naive.parquet"
    pyarrow.parquet.write_table(table, path)
    result = _run(str(path), "--map", "bottling-filler-modbus")
    assert result.exit_code == 2
    assert "row 2: cannot read timestamp 2024-03-04T08:00:00: the time has no UTC offset; store the column as a UTC timestamp type" in result.stderr


def test_max_gap_turns_silence_into_offline(tmp_path):
    # Polled every 10 minutes until 07:00, then silent until 08:00: with a 15-minute limit the state expires at 07:15.
    rows = ["timestamp,tag,value"] + [f"2024-05-01T06:{minute:02d}:00Z,state,1" for minute in range(0, 60, 10)]
    rows += ["2024-05-01T06:00:00Z,reason,0", "2024-05-01T07:00:00Z,state,1", "2024-05-01T08:00:00Z,state,1"]
    path = _write(tmp_path, "\n".join(rows) + "\n")
    held = _days(_run(str(path), "--map", "bottling-filler-modbus", "--json"))[0]
    expired = _days(_run(str(path), "--map", "bottling-filler-modbus", "--max-gap-s", "900", "--json"))[0]
    assert held["run_min"] == 120.0
    assert expired["run_min"] == 75.0


def test_parts_counted_across_offline_time_are_left_out(tmp_path):
    # Running from 06:00, polled every 10 minutes, silent from 07:00 to 08:00, stopped (no order) at 08:20.
    # With a 15-minute limit the state expires at 07:15, so 07:15-08:00 is offline, and the 400 containers
    # between the 06:50 and 08:00 readings have no run time to set against: 500 + 50 count, not 950.
    rows = ["timestamp,tag,value", "2024-05-01T06:00:00Z,reason,0", "2024-05-01T06:00:00Z,containers,0"]
    rows += [f"2024-05-01T06:{minute:02d}:00Z,state,1" for minute in range(0, 60, 10)]
    rows += ["2024-05-01T06:50:00Z,containers,500", "2024-05-01T07:00:00Z,state,1"]
    rows += ["2024-05-01T08:00:00Z,state,1", "2024-05-01T08:00:00Z,containers,900"]
    rows += ["2024-05-01T08:10:00Z,state,1", "2024-05-01T08:10:00Z,containers,950", "2024-05-01T08:20:00Z,state,0"]
    path = _write(tmp_path, "\n".join(rows) + "\n")
    expired = _days(_run(str(path), "--map", "bottling-filler-modbus", "--max-gap-s", "900", "--json"))[0]
    assert expired["run_min"] == 95.0
    assert expired["effectiveness"] == round(550 * 2.7 / (95 * 60), 6)
    held = _days(_run(str(path), "--map", "bottling-filler-modbus", "--json"))[0]
    assert held["run_min"] == 140.0
    assert held["effectiveness"] == round(950 * 2.7 / (140 * 60), 6)
    notes = json.loads(_run(str(path), "--map", "bottling-filler-modbus", "--max-gap-s", "900", "--json").stdout)["notes"]
    assert [note for note in notes if note["kind"] == "counts_left_out"] == [
        {"kind": "counts_left_out", "machine": "trace", "items": 400,
         "text": "machine trace: 400 counted item(s) left out because the time since the reading before touches offline time"}
    ]  # fmt: skip


def test_no_usable_counter_readings_leave_effectiveness_undefined(tmp_path):
    # Two minutes running, the only counter readings have Bad status: zero parts would claim the machine made nothing.
    rows = "timestamp,tag,value,status\n2024-05-01T10:00:00Z,state,1,good\n2024-05-01T10:00:00Z,reason,0,good\n"
    rows += "2024-05-01T10:01:00Z,containers,5,bad\n2024-05-01T10:02:00Z,state,0,good\n"
    result = _run(str(_write(tmp_path, rows)), "--map", "bottling-filler-modbus", "--json")
    day = _days(result)[0]
    assert day["run_min"] == 2.0
    assert (day["effectiveness"], day["quality"], day["oee"]) == (None, None, None)
    assert day["why"]["effectiveness"] == "no usable readings of the counter tags (containers)"
    assert "note: machine trace: no usable readings of the counter tags (containers), so effectiveness, quality and OEE are undefined" in result.stderr

def test_machine_without_planned_time(tmp_path):
    rows = "timestamp,tag,value\n2024-05-01T00:00:00Z,state,0\n2024-05-01T00:00:00Z,reason,0\n2024-05-01T08:00:00Z,state,0\n"
    day = _days(_run(str(_write(tmp_path, rows)), "--map", "bottling-filler-modbus", "--json"))[0]
    assert day["planned_min"] == 0.0
    assert day["availability"] is None
    assert "planned busy time is zero" in day["why"]["availability"]


def test_text_output_names_machine(tmp_path):
    result = _run(str(_write(tmp_path, FILLER_ROWS)), "--map", "bottling-filler-modbus", "--tz", "Europe/Berlin")
    assert result.exit_code == 0, result.output
    assert "machine filler" in result.stdout
    assert "2024-03-31" in result.stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("time,tag,value\n1,state,1\n", "missing column 'timestamp'; found columns: time, tag, value"),
        ("timestamp,tag,value\nyesterday,state,1\n", "row 2: cannot read timestamp 'yesterday': not ISO-8601 and not epoch milliseconds"),
        ("timestamp,tag,value\n2024-05-01T08:00:00,state,1\n", "row 2: cannot read timestamp '2024-05-01T08:00:00': the time has no UTC offset"),
        ("timestamp,tag,value\n1,reason,1\n", "missing tag: the state rules of tag map 'bottling-filler-modbus' test tag 'state', which no row of the trace has; trace tags: reason"),
        ("timestamp;tag;value\n1;state;1\n", "found columns: timestamp;tag;value. A trace needs timestamp, tag and value, and may have machine and status. The header looks like one column: write the CSV with commas as separators."),
        ("timestamp,tag,value,status\n1,state,1,fine\n", "row 2: unknown status 'fine'; use good, uncertain or bad"),
        ("timestamp,tag,value\n", "the trace has a header but no rows"),
    ],
)
def test_trace_errors_are_clear(tmp_path, text, expected):
    result = _run(str(_write(tmp_path, text)), "--map", "bottling-filler-modbus")
    assert result.exit_code == 2
    assert expected in result.stderr


def test_unknown_time_zone_and_missing_file(tmp_path):
    result = _run(str(tmp_path / "none.csv"), "--map", "bottling-filler-modbus")
    assert result.exit_code == 2
    assert "trace file not found" in result.stderr
    result = _run(str(_write(tmp_path, FILLER_ROWS)), "--map", "bottling-filler-modbus", "--tz", "Mars/Olympus")
    assert result.exit_code == 2
    assert "unknown time zone 'Mars/Olympus'" in result.stderr


def test_unknown_trace_tags_are_noted(tmp_path):
    rows = FILLER_ROWS + "2024-03-31T06:30:00+02:00,spindle_load,12.5,filler\n"
    result = _run(str(_write(tmp_path, rows)), "--map", "bottling-filler-modbus", "--tz", "Europe/Berlin", "--json")
    assert result.exit_code == 0, result.output
    assert "ignored rows of tags that the tag map does not name: spindle_load" in result.stderr


GENERIC_ROWS = """timestamp,tag,value
2024-05-01T06:00:00Z,state,1
2024-05-01T06:00:00Z,stop_reason,0
2024-05-01T06:00:00Z,good,100
2024-05-01T06:00:00Z,rejected,0
2024-05-01T07:00:00Z,state,4
2024-05-01T07:00:00Z,stop_reason,12
2024-05-01T07:15:00Z,state,1
2024-05-01T08:00:00Z,good,2800
2024-05-01T08:00:00Z,rejected,20
2024-05-01T08:00:00Z,state,0
"""


def _shipped_dir() -> Path:
    from valuegate.adapters.tagmap import shipped_tag_map_dir

    return shipped_tag_map_dir()


@pytest.mark.parametrize(
    "reference",
    ["generic/filler-modbus.yaml", "generic/filler-modbus", "filler-modbus", "filler-modbus.yaml", "ABSOLUTE", "maps/filler", "maps/filler.yaml"],
)
def test_map_reference_forms(tmp_path, monkeypatch, reference):
    # Running 06:00-07:00 and 07:15-08:00, a fault with stop reason 12 in between, then a planned stop.
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "filler.yaml").write_text((_shipped_dir() / "generic" / "filler-modbus.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    if reference == "ABSOLUTE":
        reference = str(_shipped_dir() / "generic" / "filler-modbus.yaml")
    day = _days(_run(str(_write(tmp_path, GENERIC_ROWS)), "--map", reference, "--json"))[0]
    assert day["planned_min"] == 120.0
    assert day["run_min"] == 105.0
    assert day["downtime_min"] == 15.0
    assert day["downtime_by_reason"] == {"12": 15.0}


def test_map_in_working_directory_comes_first(tmp_path, monkeypatch):
    # A local copy at the shipped map's relative path, where the fault code 4 counts as running, shadows the shipped map.
    shipped = (_shipped_dir() / "generic" / "filler-modbus.yaml").read_text(encoding="utf-8")
    changed = shipped.replace("{when: {state: [1]}, category: running", "{when: {state: [1, 4]}, category: running")
    assert changed != shipped
    (tmp_path / "generic").mkdir()
    (tmp_path / "generic" / "filler-modbus.yaml").write_text(changed, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    day = _days(_run(str(_write(tmp_path, GENERIC_ROWS)), "--map", "generic/filler-modbus.yaml", "--json"))[0]
    assert day["run_min"] == 120.0
    assert day["downtime_min"] == 0.0


def test_unknown_map_lists_shipped_maps(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _run(str(_write(tmp_path, GENERIC_ROWS)), "--map", "generic/no-such-map.yaml")
    assert result.exit_code == 2
    shipped = _shipped_dir()
    assert f"error: tag map 'generic/no-such-map.yaml' not found; looked for {tmp_path}/generic/no-such-map.yaml, {shipped}/generic/no-such-map.yaml." in result.stderr
    names = sorted(path.relative_to(shipped).as_posix() for path in shipped.rglob("*.yaml"))
    assert "generic/filler-modbus.yaml" in names
    assert f"one of the shipped maps (folder {shipped}): {', '.join(names)}" in result.stderr


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (
            "2024-05-01T07:30:00Z,good,-5",
            "trace.csv: row 5: counter tag 'good' at 2024-05-01T07:30:00Z: value -5 does not fit a 32-bit unsigned counter (0..4294967295); "
            "correct the value, or the counter's bits and signed settings in tag map 'generic-filler-modbus'",
        ),
        (
            "1714548600123,rejected,4294967296",
            "trace.csv: row 5: counter tag 'rejected' at 2024-05-01T07:30:00.123Z: value 4294967296 does not fit a 32-bit unsigned counter",
        ),
        (
            "2024-05-01T09:30:00+02:00,good,many",
            "trace.csv: row 5: counter tag 'good' at 2024-05-01T07:30:00Z: value 'many' is not a count; give a whole number, or status bad for a missing reading",
        ),
    ],
)
def test_bad_counter_value_names_row(tmp_path, row, expected):
    # The bad row is the fourth data row (row 5 of the file) but not the first in time, so the row number must be the file's.
    lines = GENERIC_ROWS.splitlines()
    text = "\n".join([*lines[:4], row, *lines[4:]]) + "\n"
    result = _run(str(_write(tmp_path, text)), "--map", "generic/filler-modbus.yaml")
    assert result.exit_code == 2
    assert expected in result.stderr
    assert "raw[" not in result.stderr


def test_bad_status_counter_value_is_dropped(tmp_path):
    # A reading with Bad status is dropped like a missing one, whatever its value.
    header, *lines = GENERIC_ROWS.splitlines()
    text = "\n".join([f"{header},status", *(f"{line},good" for line in lines), "2024-05-01T07:30:00Z,good,-5,bad"]) + "\n"
    day = _days(_run(str(_write(tmp_path, text)), "--map", "generic/filler-modbus.yaml", "--json"))[0]
    assert day["run_min"] == 105.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("timestamp,tag,value,status\n1,state,1,good\n1,reason,0,ok\n", "trace.csv: row 3: unknown status 'ok'; use good, uncertain or bad"),
        ("Timestamp, Tag ,VALUE,Status\n1,state,1,OK\n", "trace.csv: row 2: unknown status 'OK'; use good, uncertain or bad"),
        (
            "timestamp,tag,value,status\n1,state,1\n",
            "trace.csv: row 2 has 3 fields but the header has 4 columns (timestamp, tag, value, status); give every row one field per column",
        ),
        (
            "timestamp,tag,value\n1,state,1\n\n2,state,1,good\n",
            "trace.csv: row 4 has 4 fields but the header has 3 columns (timestamp, tag, value); give every row one field per column",
        ),
        ("timestamp,tag,value,tag\n1,state,1,reason\n", "trace.csv: row 1: column 'tag' appears 2 times; keep one"),
    ],
)
def test_status_and_shape_errors(tmp_path, text, expected):
    result = _run(str(_write(tmp_path, text)), "--map", "bottling-filler-modbus")
    assert result.exit_code == 2
    assert expected in result.stderr


def test_unmatched_state_is_noted(tmp_path):
    # Running 06:00-07:00 and 09:00-10:00; from 07:00 to 09:00 the state has values that no rule maps, so the default (offline) applies.
    rows = """timestamp,tag,value,quality
2024-05-01T06:00:00Z,state,1,192
2024-05-01T06:00:00Z,stop_reason,0,192
2024-05-01T07:00:00Z,state,abc,192
2024-05-01T07:30:00Z,state,9,192
2024-05-01T08:00:00Z,state,abc,192
2024-05-01T09:00:00Z,state,1,192
2024-05-01T10:00:00Z,state,1,192
"""
    result = _run(str(_write(tmp_path, rows)), "--map", "generic/filler-modbus", "--json")
    day = _days(result)[0]
    assert day["planned_min"] == 120.0
    assert day["run_min"] == 120.0
    text = (
        "machine trace: 3 state sample(s) matched no state rule of tag map 'generic-filler-modbus' and count as offline "
        "(the map's default): state='abc', state=9; add a rule if these are real machine states"
    )
    notes = json.loads(result.stdout)["notes"]
    assert notes[0] == {
        "kind": "ignored_columns",
        "columns": ["quality"],
        "text": "ignored columns that a trace does not use: quality; the columns used are timestamp, tag, value, machine, status",
    }
    assert notes[1] == {"kind": "unmatched_state", "machine": "trace", "samples": 3, "category": "offline", "values": [{"state": "abc"}, {"state": 9}], "text": text}
    # The trace has no counter rows at all, which is noted too.
    assert notes[2]["kind"] == "no_counter_readings"
    assert len(notes) == 3
    assert f"note: {text}" in result.stderr
    assert "note: ignored columns that a trace does not use: quality" in result.stderr


def test_clean_trace_has_no_notes(tmp_path):
    result = _run(str(_write(tmp_path, FILLER_ROWS)), "--map", "bottling-filler-modbus", "--tz", "Europe/Berlin", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["notes"] == []
    assert "note:" not in result.stderr


def test_rejected_glitch_is_noted(tmp_path):
    # Running from 06:00; the counter reads 0, 40, then 60,000 one minute later (more than the filler's 60 a minute), then 100.
    rows = ["timestamp,tag,value", "2024-05-01T06:00:00Z,reason,0", "2024-05-01T06:00:00Z,state,1", "2024-05-01T06:00:00Z,containers,0"]
    rows += ["2024-05-01T06:01:00Z,containers,40", "2024-05-01T06:02:00Z,containers,60000", "2024-05-01T06:03:00Z,containers,100"]
    rows += ["2024-05-01T06:10:00Z,state,0"]
    path = _write(tmp_path, "\n".join(rows) + "\n")
    run = _run(str(path), "--map", "bottling-filler-modbus", "--json")
    # 0 -> 40 -> 100: the jump to 60,000 is left out and 100 counts on from 40.
    assert _days(run)[0]["produced"] == 100
    assert [note for note in json.loads(run.stdout)["notes"] if note["kind"] == "counter_glitches"] == [
        {"kind": "counter_glitches", "machine": "trace", "readings": 1,
         "text": "machine trace: 1 counter reading(s) rejected as glitches, jumps faster than the counter's max_rate_per_min that no later "
                 "reading confirmed; check the counter tag if there are many"}
    ]  # fmt: skip
