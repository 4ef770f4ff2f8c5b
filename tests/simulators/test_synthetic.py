"""Synthetic lines: seeded generation, their statistics, and serving them over Modbus and OPC UA."""

from __future__ import annotations

import asyncio
import struct
from datetime import date, datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from asyncua import Client, ua
from pymodbus.client import AsyncModbusTcpClient

from valuegate.adapters.tagmap import load_tag_map
from valuegate.simulators.layouts import SYNTHETIC_FILLER_MAP, state_codes, synthetic_filler_map
from valuegate.simulators.mtconnect_opcua import MTCONNECT_NAMESPACE
from valuegate.simulators.scenarios import SimulatorOptions, build_simulator
from valuegate.simulators.synthetic import MICRO_STOP_REASON, SyntheticScenario, generate_line


def test_same_seed_same_line() -> None:
    first = generate_line(SyntheticScenario(seed=7, days=3))
    again = generate_line(SyntheticScenario(seed=7, days=3))
    other = generate_line(SyntheticScenario(seed=8, days=3))
    assert first.segments == again.segments
    assert first.produced_ms == again.produced_ms
    assert first.rejected_ms == again.rejected_ms
    assert first.segments != other.segments


def test_segments_cover_days_without_gaps() -> None:
    scenario = SyntheticScenario(seed=3, days=7)
    line = generate_line(scenario)
    for earlier, later in zip(line.segments, line.segments[1:]):
        assert earlier.end_ms == later.start_ms
        assert (earlier.category, earlier.reason) != (later.category, later.reason)
    for day, totals in line.daily_truth().items():
        assert sum(value for key, value in totals.items() if key.endswith("_ms")) == 86_400_000, day
    weekend = line.daily_truth()[date(2024, 3, 9)]
    assert weekend["planned_stop_ms"] == 86_400_000
    assert weekend["produced"] == 0


def test_shifts_in_plant_zone() -> None:
    line = generate_line(SyntheticScenario(seed=1, days=1))
    zone = ZoneInfo("Asia/Shanghai")
    scheduled = [segment for segment in line.segments if segment.category != "planned_stop"]
    assert scheduled[0].start_ms == int(datetime(2024, 3, 4, 6, tzinfo=zone).timestamp() * 1000)
    assert scheduled[-1].end_ms == int(datetime(2024, 3, 4, 22, tzinfo=zone).timestamp() * 1000)
    assert {segment.category for segment in line.segments} == {"planned_stop", "running", "unplanned_stop", "changeover", "idle"}


def test_items_only_while_running_and_rejects_subset() -> None:
    scenario = SyntheticScenario(seed=5, days=2, reject_rate=0.05)
    line = generate_line(scenario)
    timeline = line.timeline()
    assert all(timeline.status_at(instant).state == 1 for instant in line.produced_ms)
    assert set(line.rejected_ms) <= set(line.produced_ms)
    running_ms = sum(segment.end_ms - segment.start_ms for segment in line.segments if segment.category == "running")
    cycle_ms = scenario.ideal_cycle_s * 1000 / scenario.speed_ratio
    assert len(line.produced_ms) == pytest.approx(running_ms / cycle_ms, abs=1)
    assert len(line.rejected_ms) / len(line.produced_ms) == pytest.approx(0.05, abs=0.01)


def test_failure_statistics_follow_mtbf_and_mttr() -> None:
    scenario = SyntheticScenario(seed=11, days=70, micro_stops_per_h=0, starved_per_h=0, changeover_every_h=0, mtbf_min=60, mttr_min=10)
    line = generate_line(scenario)
    failures = [segment for segment in line.segments if segment.category == "unplanned_stop"]
    running_min = sum(segment.end_ms - segment.start_ms for segment in line.segments if segment.category == "running") / 60_000
    repairs = sorted((segment.end_ms - segment.start_ms) / 60_000 for segment in failures)
    assert len(failures) > 300
    assert running_min / len(failures) == pytest.approx(60, rel=0.15)
    assert repairs[len(repairs) // 2] == pytest.approx(10, rel=0.15)
    assert {segment.reason for segment in failures} == {101, 102, 103, 104}
    assert MICRO_STOP_REASON not in {segment.reason for segment in failures}


def test_invalid_scenarios_named() -> None:
    with pytest.raises(ValueError, match="reject_rate=1.5 must be in"):
        SyntheticScenario(reject_rate=1.5)
    with pytest.raises(ValueError, match="shift 14:00-06:00 must end after it starts"):
        SyntheticScenario(shifts=(("14:00", "06:00"),))
    with pytest.raises(ValueError, match="shift time '6am' must be HH:MM"):
        SyntheticScenario(shifts=(("6am", "14:00"),))


def test_synthetic_tag_map_validates(tmp_path: Path) -> None:
    path = tmp_path / "synthetic.yaml"
    path.write_text(SYNTHETIC_FILLER_MAP, encoding="utf-8")
    loaded = load_tag_map(path)
    assert loaded == synthetic_filler_map()
    assert state_codes(loaded) == {"running": 1, "unplanned_stop": 2, "changeover": 3, "idle": 4, "planned_stop": 0}


def test_bottling_map_lacks_changeover_code() -> None:
    from valuegate.adapters.tagmap import shipped_tag_map_dir

    bottling = load_tag_map(shipped_tag_map_dir() / "demo" / "bottling-filler-modbus.yaml")
    line = generate_line(SyntheticScenario(days=1))
    with pytest.raises(ValueError, match="no state code for categories changeover, idle"):
        line.timeline(state_codes(bottling))


async def replayed_words(options: SimulatorOptions, address: int, count: int) -> list[int]:
    """Replay the synthetic line over Modbus to its end and return the holding registers it then serves."""
    simulator = build_simulator("synthetic", "modbus", options)
    async with simulator:
        simulator.resume()
        await simulator.wait_done(timeout_s=30)
        client = AsyncModbusTcpClient("127.0.0.1", port=simulator.port)
        await client.connect()
        words = (await client.read_holding_registers(address, count=count)).registers
        client.close()
    return words


async def test_synthetic_over_modbus_matches_line() -> None:
    line = generate_line(SyntheticScenario(seed=1, days=1))
    words = await replayed_words(SimulatorOptions(speed=2_000_000, days=1, paused=True), 0, 13)
    assert words[0] == 0
    assert struct.unpack(">Q", struct.pack(">4H", *words[2:6]))[0] == line.segments[-1].start_ms
    assert words[10] == len(line.produced_ms) % 65_536
    assert words[12] == len(line.rejected_ms)
    assert words[11] == len(line.segments) - 1


async def test_synthetic_over_opcua_sends_states() -> None:
    scenario = SyntheticScenario(seed=1, days=1, shifts=(("06:00", "08:00"),))
    line = generate_line(scenario)
    received: list[tuple[str, datetime]] = []

    class Handler:
        def datachange_notification(self, node, value, data) -> None:
            received.append((value, data.monitored_item.Value.SourceTimestamp))

    simulator = build_simulator("synthetic", "opcua", SimulatorOptions(speed=500_000, paused=True, scenario=scenario))
    async with simulator:
        async with Client(simulator.endpoint) as client:
            namespace = await client.get_namespace_index(MTCONNECT_NAMESPACE)
            subscription = await client.create_subscription(20, Handler())
            await subscription.subscribe_data_change(client.get_node(ua.NodeId("Machine/Execution", namespace)), queuesize=10_000)
            simulator.resume()
            await simulator.wait_done(timeout_s=30)
            await asyncio.sleep(0.3)
            rejects = await client.get_node(ua.NodeId("Machine/RejectCount", namespace)).read_value()
            parts = await client.get_node(ua.NodeId("Machine/PartCount", namespace)).read_value()

    looks = {"planned_stop": "UNAVAILABLE", "running": "ACTIVE", "idle": "READY", "changeover": "READY"}
    wanted: list[tuple[str, datetime]] = []
    for segment in line.segments:
        value = looks.get(segment.category) or ("FEED_HOLD" if segment.reason == MICRO_STOP_REASON else "STOPPED")
        if not wanted or wanted[-1][0] != value:
            wanted.append((value, datetime.fromtimestamp(segment.start_ms / 1000, tz=timezone.utc)))
    assert [value for value, _ in received] == [value for value, _ in wanted]
    assert [moment for _, moment in received[1:]] == [moment for _, moment in wanted[1:]]
    assert received[1][1] == datetime(2024, 3, 4, 6, tzinfo=ZoneInfo("Asia/Shanghai"))
    assert (parts, rejects) == (len(line.produced_ms), len(line.rejected_ms))


async def test_good_counter_served_for_good_map() -> None:
    """A map that counts good parts (kind good) gets produced minus rejected, not a counter stuck at 0."""
    from valuegate.adapters.tagmap import shipped_tag_map_dir

    options = SimulatorOptions(speed=2_000_000, days=1, paused=True, tag_map=shipped_tag_map_dir() / "generic" / "filler-modbus.yaml")
    line = generate_line(SyntheticScenario(seed=1, days=1))
    words = await replayed_words(options, 2, 4)
    good, rejected = struct.unpack(">2I", struct.pack(">4H", *words))
    assert rejected == len(line.rejected_ms) > 0
    assert good == len(line.produced_ms) - len(line.rejected_ms)
