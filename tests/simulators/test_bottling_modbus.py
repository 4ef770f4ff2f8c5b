"""The bottling line replayed over a real pymodbus server, read by a real pymodbus client."""

from __future__ import annotations

import asyncio
import csv
import gzip
import struct
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from pymodbus.client import AsyncModbusTcpClient

from valuegate.simulators.modbus_line import BottlingModbusSimulator

RECORDINGS = Path(__file__).resolve().parents[2] / "simulators" / "recordings"
SAO_PAULO = ZoneInfo("America/Sao_Paulo")
POLL_S = 0.01


def _uint64_abcd(words: list[int]) -> int:
    return struct.unpack(">Q", struct.pack(">4H", *words))[0]


def _uint64_cdab(words: list[int]) -> int:
    # CDAB for a 64-bit value: the least significant word first, bytes big-endian in each word.
    return struct.unpack(">Q", struct.pack(">4H", *reversed(words)))[0]


def _utc_ms(day: date, fraction: str) -> int:
    local = datetime(day.year, day.month, day.day, tzinfo=SAO_PAULO) + timedelta(milliseconds=round(float(fraction) * 86_400_000))
    return round(local.timestamp() * 1000)


def _csv_rows(name: str) -> list[dict[str, str]]:
    with gzip.open(RECORDINGS / "bottling-line" / (name + ".gz"), "rt", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


async def _poll_until_done(
    client: AsyncModbusTcpClient, sim: BottlingModbusSimulator, *, until_since: int | None = None
) -> list[dict[str, int]]:
    """Poll registers 0-11 until the done coil is set (or a state begins at ``until_since``).

    Return one entry per distinct (state, since).
    """
    seen: list[dict[str, int]] = []
    while True:
        response = await client.read_holding_registers(0, count=12)
        assert not response.isError(), response
        words = response.registers
        snapshot = {
            "state": words[0],
            "reason": words[1],
            "since": _uint64_abcd(words[2:6]),
            "clock": _uint64_cdab(words[6:10]),
            "containers": words[10],
            "changes": words[11],
        }
        if not seen or (seen[-1]["state"], seen[-1]["since"]) != (snapshot["state"], snapshot["since"]):
            seen.append(snapshot)
        else:
            seen[-1] = snapshot
        if until_since is not None and snapshot["since"] == until_since:
            return seen
        coils = await client.read_coils(0, count=1)
        if coils.bits[0]:
            return seen
        await asyncio.sleep(POLL_S)


def _expected_changes_2022_10_20() -> list[tuple[int, int]]:
    day = date(2022, 10, 20)
    summary = next(row for row in _csv_rows("daily_operation_summary.csv") if row["date"] == "44854")
    window = (_utc_ms(day, summary["production_start_time"]), _utc_ms(day, summary["production_end_time"]))
    stops = sorted(
        (_utc_ms(day, row["downtime_start_time"]), _utc_ms(day, row["downtime_end_time"]))
        for row in _csv_rows("downtime_event_log.csv")
        if row["date"] == "44854"
    )
    day_start = int(datetime(2022, 10, 20, tzinfo=SAO_PAULO).timestamp() * 1000)
    expected = [(0, day_start), (1, window[0])]
    for start, end in stops:
        expected += [(2, start), (1, end)]
    expected.append((0, window[1]))
    return expected


async def test_read_paced_replay_shows_every_change_to_a_slow_poller() -> None:
    # At 10 million recorded seconds per real second a 10 ms poller would miss
    # nearly every stop; holding each change until it is read shows all of them.
    expected = _expected_changes_2022_10_20()
    day = date(2022, 10, 20)
    async with BottlingModbusSimulator(speed=10_000_000, hold_until_read=True, tick_ms=2, start=day, end=day) as sim:
        client = AsyncModbusTcpClient("127.0.0.1", port=sim.port)
        await client.connect()
        try:
            seen = await asyncio.wait_for(_poll_until_done(client, sim), timeout=30)
        finally:
            client.close()
    assert [(item["state"], item["since"]) for item in seen] == expected
    assert [item["changes"] for item in seen] == list(range(len(expected)))


async def test_poller_sees_every_state_change() -> None:
    day = date(2022, 10, 20)
    summary = next(row for row in _csv_rows("daily_operation_summary.csv") if row["date"] == "44854")
    window = (_utc_ms(day, summary["production_start_time"]), _utc_ms(day, summary["production_end_time"]))
    stops = sorted(
        (_utc_ms(day, row["downtime_start_time"]), _utc_ms(day, row["downtime_end_time"]))
        for row in _csv_rows("downtime_event_log.csv")
        if row["date"] == "44854"
    )
    day_start = int(datetime(2022, 10, 20, tzinfo=SAO_PAULO).timestamp() * 1000)
    expected = [(0, day_start), (1, window[0])]
    for start, end in stops:
        expected += [(2, start), (1, end)]
    expected.append((0, window[1]))

    async with BottlingModbusSimulator(speed=50_000, min_dwell_ms=int(3 * POLL_S * 1000) * 2, start=day, end=day) as sim:
        client = AsyncModbusTcpClient("127.0.0.1", port=sim.port)
        await client.connect()
        try:
            seen = await asyncio.wait_for(_poll_until_done(client, sim), timeout=30)
        finally:
            client.close()
        assert sim.finished.is_set()

    assert [(item["state"], item["since"]) for item in seen] == expected
    assert [item["changes"] for item in seen] == list(range(len(expected)))
    for item in seen:
        assert item["clock"] >= item["since"]
        assert item["reason"] == 0
    # The clock stops one minute past the end of the plant day so that an edge can close it.
    assert seen[-1]["clock"] == int(datetime(2022, 10, 21, tzinfo=SAO_PAULO).timestamp() * 1000) + 60_000
    units = sum(int(row["production_gallons"]) for row in _csv_rows("processed_hourly.csv") if row["date"] == "44854")
    assert seen[-1]["containers"] == 50_000 + units


async def test_thirty_second_stop_keeps_its_duration() -> None:
    day = date(2022, 7, 22)
    event = next(row for row in _csv_rows("downtime_event_log.csv") if row["downtime_id"] == "downtime_004")
    start, end = _utc_ms(day, event["downtime_start_time"]), _utc_ms(day, event["downtime_end_time"])
    assert round((end - start) / 1000) == 30

    # One recorded day in about a second: the stop lasts under a millisecond of real time.
    async with BottlingModbusSimulator(speed=86_400, min_dwell_ms=30, start=day, end=day) as sim:
        client = AsyncModbusTcpClient("127.0.0.1", port=sim.port)
        await client.connect()
        try:
            seen = await asyncio.wait_for(_poll_until_done(client, sim, until_since=end), timeout=40)
        finally:
            client.close()

    sinces = [item["since"] for item in seen]
    index = sinces.index(start)
    assert seen[index]["state"] == 2
    assert seen[index + 1]["state"] == 1
    assert seen[index + 1]["since"] - seen[index]["since"] == end - start
    assert [item["changes"] for item in seen] == list(range(len(seen)))


async def test_counter_wraps_during_full_offset() -> None:
    async with BottlingModbusSimulator(speed=10_000_000, counter_offset=65_530, days=1) as sim:
        await asyncio.wait_for(sim.finished.wait(), timeout=30)
        client = AsyncModbusTcpClient("127.0.0.1", port=sim.port)
        await client.connect()
        try:
            response = await client.read_holding_registers(10, count=1)
        finally:
            client.close()
    # 2,849 containers on 2022-07-22 starting from 65,530 end at 68,379, which wraps to 2,843.
    assert response.registers == [(65_530 + 2_849) % 65_536]
