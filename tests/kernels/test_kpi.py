"""ISO 22400-2 KPIs: hand-computed windows, zero denominators and roll-ups that sum before dividing."""

from __future__ import annotations

import math

import pytest

from valuegate.edge.kernels import Totals, kpis, totals_from_columns, totals_from_records
from valuegate.edge.protocol.records import MinuteRecord

MIN = 60_000


def _record(machine: str, minute: str, **fields) -> MinuteRecord:
    values = dict.fromkeys(("running_ms", "idle_ms", "planned_stop_ms", "unplanned_stop_ms", "changeover_ms", "offline_ms", "produced", "reject", "stops", "uncertain_ms"), 0)
    values.update(fields)
    return MinuteRecord(machine=machine, minute=minute, reasons=values.pop("reasons", {}), **values)


def test_hand_computed_window():
    # 8 h planned busy: 6 h running, 1 h unplanned in 4 stops (40 min jam, 20 min unassigned), 0.5 h idle, 0.5 h changeover.
    totals = totals_from_columns(
        [360 * MIN, 30 * MIN, 60 * MIN, 60 * MIN, 30 * MIN, 0],
        produced=600,
        reject=30,
        stops=4,
        reasons={"jam": 40 * MIN},
        ideal_cycle_time_s=30.0,
    )
    result = kpis(totals)
    assert result.planned_busy_min == 480
    assert result.run_min == 360
    assert result.availability == 0.75
    assert result.effectiveness == pytest.approx(600 * 30 / (360 * 60))
    assert result.quality == 0.95
    assert result.oee == pytest.approx(0.75 * (600 * 30 / (360 * 60)) * 0.95)
    assert result.mtbf_min == 90
    assert result.mttr_min == 15
    assert list(result.downtime_by_reason.items()) == [("jam", 40.0), ("unassigned", 20.0)]
    assert result.why == {}


def test_zero_planned_time_gives_no_availability_and_reason():
    result = kpis(totals_from_columns([0, 0, 480 * MIN, 0, 0, 960 * MIN], ideal_cycle_time_s=10.0))
    assert result.availability is None
    assert "planned busy time is zero" in result.why["availability"]
    assert result.oee is None
    assert "availability" in result.why["oee"]
    assert result.mtbf_min is None
    assert result.mttr_min is None
    for value in (result.planned_busy_min, result.run_min, result.offline_min):
        assert math.isfinite(value)


def test_unknown_ideal_cycle_time_leaves_effectiveness_undefined():
    result = kpis(totals_from_columns([60 * MIN, 0, 0, 0, 0, 0], produced=10))
    assert result.effectiveness is None
    assert "without an ideal cycle time" in result.why["effectiveness"]
    assert result.quality == 1.0


def test_no_production_gives_no_quality():
    result = kpis(totals_from_columns([60 * MIN, 0, 0, 0, 0, 0], ideal_cycle_time_s=1.0))
    assert result.effectiveness == 0.0
    assert result.quality is None
    assert result.why["quality"] == "no items were produced in the window"


def test_roll_up_sums_before_dividing():
    # Machine a: 1 h planned, fully running. Machine b: 9 h planned, 3 h running.
    a = totals_from_columns([60 * MIN, 0, 0, 0, 0, 0], produced=60, ideal_cycle_time_s=60.0)
    b = totals_from_columns([180 * MIN, 0, 0, 360 * MIN, 0, 0], produced=90, stops=3, ideal_cycle_time_s=120.0)
    both = kpis(a + b)
    assert both.availability == 240 / 600  # not the mean of 1.0 and 1/3
    assert both.effectiveness == (60 * 60 + 90 * 120) / (240 * 60)
    assert both.stops == 3


def test_totals_from_records_per_machine_ideal():
    records = [
        _record("m1", "2024-01-01T00:00:00Z", running_ms=MIN, produced=2, reasons={}),
        _record("m2", "2024-01-01T00:00:00Z", running_ms=30_000, unplanned_stop_ms=30_000, produced=1, stops=1, reasons={"E12": 30_000}),
    ]
    totals = totals_from_records(records, ideal_cycle_time_s={"m1": 20.0, "m2": 15.0})
    assert totals.running_ms == 90_000
    assert totals.ideal_us == 2 * 20_000_000 + 15_000_000
    assert totals.reasons == {"E12": 30_000}
    assert kpis(totals).effectiveness == 55 / 90


def test_totals_from_records_unknown_machine_is_named():
    with pytest.raises(KeyError, match="machine 'm9' has no ideal cycle time entry"):
        totals_from_records([_record("m9", "2024-01-01T00:00:00Z")], ideal_cycle_time_s={"m1": 1.0})


def test_totals_add_is_associative_on_integers():
    parts = [totals_from_columns([i * 1000, i, 0, 7 * i, 0, 1], produced=i, reasons={"x": 7 * i}, ideal_cycle_time_s=0.3) for i in range(5)]
    left = ((parts[0] + parts[1]) + parts[2]) + (parts[3] + parts[4])
    right = parts[0] + (parts[1] + (parts[2] + (parts[3] + parts[4])))
    assert left == right
    assert left.reasons == {"x": 70}
    assert isinstance(left, Totals)
