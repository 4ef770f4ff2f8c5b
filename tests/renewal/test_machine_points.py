"""Renewal talking points about machines: best and worst only where machines differ, a neutral line otherwise."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from tests.verify.bundles import oee_contract
from valuegate.cloud.renewal.package import PackageInputs, talking_points
from valuegate.cloud.renewal.triggers import Firing

FIRED = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)


def machine_points(machines: list[dict], language: str) -> list[str]:
    """Return the talking points after the value line (no anchors or reductions are given, so they are about machines)."""
    inputs = PackageInputs(
        contract=oee_contract(), firing=Firing("days_before_end:30", "days_before_end", {"days": 30}), fired_at=FIRED, total=Decimal("0.00"),
        voucher_count=0, anchors=[], reductions=[], machines=machines, bundle=b"",
    )
    return talking_points(inputs, language)[1:]


@pytest.mark.parametrize(
    ("language", "expected"), [("en", ["Availability of filler-01: 45.9%."]), ("zh-CN", ["设备 filler-01 的可用率为 45.9%。"])]
)
def test_one_machine_is_not_best(language: str, expected: list[str]) -> None:
    assert machine_points([{"machine": "filler-01", "availability": 0.4589}], language) == expected


@pytest.mark.parametrize(
    ("language", "expected"),
    [("en", ["All 3 machines have an availability of 90.0%."]), ("zh-CN", ["全部 3 台设备的可用率均为 90.0%。"])],
)
def test_equal_machines_have_no_best(language: str, expected: list[str]) -> None:
    machines = [{"machine": name, "availability": value} for name, value in (("m-1", 0.9), ("m-2", 0.90004), ("m-3", 0.8996))]
    assert machine_points(machines, language) == expected


def test_different_machines_name_best_and_worst() -> None:
    machines = [{"machine": "m-1", "availability": 0.5}, {"machine": "m-2", "availability": 0.917}, {"machine": "m-3", "availability": None}]
    assert machine_points(machines, "en") == [
        "Best machine: m-2 (availability 91.7%).",
        "Machine that needs the most attention: m-1 (availability 50.0%).",
    ]


def test_no_availability_no_machine_point() -> None:
    assert machine_points([{"machine": "m-1", "availability": None}], "en") == []
