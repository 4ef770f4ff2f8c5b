"""MTConnect recordings replayed by a real asyncua server, received by a real asyncua client."""

from __future__ import annotations

import asyncio
import gzip
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from asyncua import Client, ua

from valuegate.simulators.mtconnect_opcua import MTCONNECT_NAMESPACE, MtconnectOpcUaSimulator

RECORDINGS = Path(__file__).resolve().parents[2] / "simulators" / "recordings"


class Collector:
    """Subscription handler that keeps every notification with its SourceTimestamp."""

    def __init__(self) -> None:
        self.changes: dict[str, list[tuple[object, datetime]]] = {}

    def datachange_notification(self, node, value, data) -> None:
        name = node.nodeid.Identifier.split("/", 1)[1]
        self.changes.setdefault(name, []).append((value, data.monitored_item.Value.SourceTimestamp))


def _raw_changes(path: Path, item: str, begin: datetime, end: datetime) -> list[tuple[str, datetime]]:
    """Return (value, time) of every change of ``item`` in a raw SHDR file between ``begin`` and ``end``."""
    changes: list[tuple[str, datetime]] = []
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            fields = line.rstrip("\n").split("|")
            for index in range(1, len(fields) - 1, 2):
                if fields[index] != item:
                    continue
                moment = datetime.fromisoformat(fields[0])
                if begin <= moment < end and (not changes or changes[-1][0] != fields[index + 1]):
                    changes.append((fields[index + 1], moment))
    return changes


async def _subscribe(client: Client, names: list[str], handler: Collector) -> None:
    namespace = await client.get_namespace_index(MTCONNECT_NAMESPACE)
    subscription = await client.create_subscription(20, handler)
    for name in names:
        await subscription.subscribe_data_change(client.get_node(ua.NodeId(f"Machine/{name}", namespace)), queuesize=10_000)


async def _read(client: Client, name: str) -> ua.DataValue:
    namespace = await client.get_namespace_index(MTCONNECT_NAMESPACE)
    return await client.get_node(ua.NodeId(f"Machine/{name}", namespace)).read_data_value(raise_on_bad_status=False)


async def _eventually(check, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_subscriber_receives_every_execution_change() -> None:
    new_york = ZoneInfo("America/New_York")
    begin = datetime(2016, 5, 2, tzinfo=new_york)
    end = begin + timedelta(days=1)
    raw = RECORDINGS / "nist-mazak03-week" / "Mazak03-20160502-20160503.txt.gz"
    expected_execution = _raw_changes(raw, "execution", begin, end)
    expected_mode = _raw_changes(raw, "mode", begin, end)

    async with MtconnectOpcUaSimulator("mazak03", speed=100_000, days=1, paused=True) as sim:
        handler = Collector()
        async with Client(sim.endpoint) as client:
            await _subscribe(client, ["Execution", "ControllerMode", "AlarmCode", "ReplayDone"], handler)
            sim.resume()
            await sim.wait_done(timeout_s=60)
            await _eventually(lambda: _has_done(handler))
            clock = await _read(client, "Clock")

    assert handler.changes["Execution"] == expected_execution
    assert handler.changes["ControllerMode"] == expected_mode
    assert len(expected_execution) > 100
    # One INTERFERE fault (native code 1102) is raised and cleared on 2016-05-02.
    assert [value for value, _ in handler.changes["AlarmCode"]] == [0, 1102, 0]
    assert handler.changes["AlarmCode"][1][1] == datetime(2016, 5, 2, 17, 10, 16, 281548, tzinfo=timezone.utc)
    assert clock.Value.Value == (end + timedelta(minutes=1)).astimezone(timezone.utc)
    assert clock.SourceTimestamp == clock.Value.Value


async def _has_done(handler: Collector) -> bool:
    return [value for value, _ in handler.changes.get("ReplayDone", [])][-1:] == [True]


async def test_hurco_part_count_and_program_status() -> None:
    begin = datetime(2017, 2, 1, tzinfo=timezone.utc)
    end = begin + timedelta(days=2)
    raw = RECORDINGS / "nist-hurco-mtc" / "2-1-2017-Hurco04-Clean.txt.gz"
    expected_status = _raw_changes(raw, "Program_Status", begin, end)
    expected_count = [(int(value), moment) for value, moment in _raw_changes(raw, "Part_Count", begin, end)]

    async with MtconnectOpcUaSimulator("hurco04", speed=200_000, paused=True) as sim:
        handler = Collector()
        async with Client(sim.endpoint) as client:
            await _subscribe(client, ["Execution", "PartCount"], handler)
            sim.resume()
            await sim.wait_done(timeout_s=60)
            await asyncio.sleep(0.3)
            namespace = await client.get_namespace_index(MTCONNECT_NAMESPACE)
            with pytest.raises(ua.UaStatusCodeError, match="BadNodeIdUnknown"):
                await client.get_node(ua.NodeId("Machine/ControllerMode", namespace)).read_value()

    assert handler.changes["Execution"] == expected_status
    assert handler.changes["PartCount"] == expected_count


async def test_status_slow_and_timeout_faults() -> None:
    async with MtconnectOpcUaSimulator("mazak03", days=1, paused=True) as sim:
        async with Client(sim.endpoint) as client:
            await sim.inject("bad:node=Execution,for=0.4")
            bad = await _read(client, "Execution")
            assert bad.StatusCode.name == "BadSensorFailure"
            assert (await _read(client, "ControllerMode")).StatusCode.is_good()
            await _eventually(lambda: _is_good(client, "Execution"))
            restored = await _read(client, "Execution")
            assert restored.Value.Value == "UNAVAILABLE"

            await sim.inject("uncertain:for=0.4")
            uncertain = await _read(client, "ControllerMode")
            assert uncertain.StatusCode.name == "UncertainLastUsableValue"
            assert uncertain.Value.Value == "UNAVAILABLE"
            await _eventually(lambda: _is_good(client, "ControllerMode"))

        async with Client(sim.endpoint, timeout=0.5) as client:
            await sim.inject("slow:delay_ms=300,for=5")
            started = time.monotonic()
            assert (await _read(client, "Execution")).Value.Value == "UNAVAILABLE"
            assert time.monotonic() - started >= 0.3
            sim.server.delay_responses(0, duration_s=0)

            await sim.inject("timeout:for=1")
            with pytest.raises((asyncio.TimeoutError, ua.UaError, ConnectionError)):
                await _read(client, "Execution")


async def _is_good(client: Client, name: str) -> bool:
    return (await _read(client, name)).StatusCode.is_good()


async def test_counter_faults_drop_and_restart() -> None:
    async with MtconnectOpcUaSimulator("hurco04", speed=500_000, paused=True) as sim:
        port = sim.port
        client = Client(sim.endpoint, timeout=2)
        await client.connect()
        try:
            assert (await _read(client, "Execution")).Value.Value == "READY"
            assert (await _read(client, "PartCount")).Value.Value == 1065
            await sim.inject("counter_reset")
            assert (await _read(client, "PartCount")).Value.Value == 0
            await sim.inject("counter_wrap:margin=1")
            assert (await _read(client, "PartCount")).Value.Value == 2**31 - 1
            await sim.inject("drop")
            with pytest.raises((ConnectionError, asyncio.TimeoutError, ua.UaError)):
                await _read(client, "Execution")
        finally:
            await client.disconnect()

        await sim.inject("server_restart:down=0.2")
        assert sim.port == port
        async with Client(sim.endpoint) as client:
            assert (await _read(client, "PartCount")).Value.Value == 2**31 - 1
            sim.resume()
            await sim.wait_done(timeout_s=60)
            # Ten more parts after 2**31 - 1 wrap the signed 32-bit counter.
            assert (await _read(client, "PartCount")).Value.Value == -(2**31) + 9
            assert (await _read(client, "ReplayDone")).Value.Value is True


async def test_bottling_over_opcua() -> None:
    from datetime import date

    from valuegate.simulators.recordings import load_bottling
    from valuegate.simulators.scenarios import SimulatorOptions, build_simulator

    day = date(2022, 10, 20)
    record = load_bottling().days[day]
    (run_start, run_end), = record.runs
    assert all(run_start < stop_start and stop_end < run_end for stop_start, stop_end in record.stops)
    expected = ["UNAVAILABLE", "ACTIVE"]
    instants = [record.day_start_ms, run_start]
    for stop_start, stop_end in record.stops:
        expected += ["FEED_HOLD", "ACTIVE"]
        instants += [stop_start, stop_end]
    expected.append("UNAVAILABLE")
    instants.append(run_end)

    simulator = build_simulator("bottling", "opcua", SimulatorOptions(speed=200_000, start=day, end=day, paused=True))
    async with simulator:
        handler = Collector()
        async with Client(simulator.endpoint) as client:
            await _subscribe(client, ["Execution", "PartCount"], handler)
            simulator.resume()
            await simulator.wait_done(timeout_s=30)
            await asyncio.sleep(0.3)

    received = handler.changes["Execution"]
    assert [value for value, _ in received] == expected
    assert [int(moment.timestamp() * 1000) for _, moment in received] == instants
    assert handler.changes["PartCount"][-1][0] == 50_000 + sum(hour.containers for hour in record.hours)



async def test_clock_step_shifts_source_timestamps() -> None:
    """clock_step shifts Machine/Clock and the SourceTimestamp of every later write; by=0 sets the clock right."""
    async with MtconnectOpcUaSimulator("mazak03", days=1, paused=True) as sim:
        async with Client(sim.endpoint) as client:
            recorded = datetime.fromtimestamp(sim.clock.now_ms / 1000, timezone.utc)
            await sim.inject("clock_step:by=7200")
            clock = await _read(client, "Clock")
            assert clock.Value.Value.replace(tzinfo=timezone.utc) == recorded + timedelta(hours=2)
            assert clock.SourceTimestamp.replace(tzinfo=timezone.utc) == recorded + timedelta(hours=2)
            await sim.inject("counter_reset")
            part_count = await _read(client, "PartCount")
            assert part_count.SourceTimestamp.replace(tzinfo=timezone.utc) == recorded + timedelta(hours=2)

            await sim.inject("clock_step:by=0")
            clock = await _read(client, "Clock")
            assert clock.SourceTimestamp.replace(tzinfo=timezone.utc) == recorded
