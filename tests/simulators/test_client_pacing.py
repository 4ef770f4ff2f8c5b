"""`valuegate simulate --wait-for-client` and `--hold-until-read`, read by real pymodbus and asyncua clients."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from asyncua import Client, ua
from pymodbus.client import AsyncModbusTcpClient

from valuegate.simulators.modbus_line import BottlingModbusSimulator
from valuegate.simulators.mtconnect_opcua import MTCONNECT_NAMESPACE, MtconnectOpcUaSimulator

# The first recorded instant of the bottling line's first production day (2022-07-22 00:00 in America/Sao_Paulo).
BOTTLING_START_MS = 1_658_458_800_000


@asynccontextmanager
async def simulate(*arguments: str) -> AsyncIterator[tuple[subprocess.Popen[str], list[str]]]:
    """Run `valuegate simulate` until it prints where it listens; yield the process and the lines printed so far."""
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "valuegate"), "simulate", *arguments],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        while not any(line.startswith("waiting for a client") for line in lines):
            line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 60)
            assert line, f"the simulator exited early: {lines}"
            lines.append(line.rstrip("\n"))
        yield process, lines
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def listening_port(lines: list[str]) -> int:
    for line in lines:
        found = re.search(r"(?:on 127\.0\.0\.1:|opc\.tcp://127\.0\.0\.1:)(\d+)", line)
        if found:
            return int(found.group(1))
    raise AssertionError(f"no port in {lines}")


def clock_of(words: list[int]) -> int:
    """Decode the bottling map's uint64 CDAB clock (registers 6-9, least significant word first)."""
    return words[3] << 48 | words[2] << 32 | words[1] << 16 | words[0]


async def test_modbus_replay_waits_for_first_read() -> None:
    async with simulate("bottling", "--days", "1", "--speed", "3600", "--wait-for-client") as (process, lines):
        assert "waiting for a client that reads the holding registers; the replay starts then" in lines
        await asyncio.sleep(1.0)  # at 3600x an hour of recorded time would pass here without the wait
        client = AsyncModbusTcpClient("127.0.0.1", port=listening_port(lines))
        assert await client.connect()
        first = await client.read_holding_registers(6, count=4)
        await asyncio.sleep(0.5)
        later = await client.read_holding_registers(6, count=4)
        client.close()
        assert clock_of(first.registers) == BOTTLING_START_MS
        assert clock_of(later.registers) > BOTTLING_START_MS + 600_000
        assert process.stdout is not None
        printed = [(await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 10)).strip() for _ in range(2)]
        assert "client connected; replay started" in printed


async def test_modbus_hold_until_read_misses_no_change() -> None:
    # A plant day in about 0.1 s: without holding, a 20 ms poller would see only a few of the day's changes.
    async with simulate("bottling", "--days", "1", "--speed", "1000000", "--wait-for-client", "--hold-until-read") as (_, lines):
        assert any("each change waits for a client read" in line for line in lines)
        client = AsyncModbusTcpClient("127.0.0.1", port=listening_port(lines))
        assert await client.connect()
        seen: list[tuple[int, int, int]] = []
        for _ in range(400):
            words = (await client.read_holding_registers(0, count=12)).registers
            changes, state, since = words[11], words[0], words[2] << 48 | words[3] << 32 | words[4] << 16 | words[5]
            if not seen or seen[-1][0] != changes:
                seen.append((changes, state, since))
            if len(seen) > 40:
                break
            await asyncio.sleep(0.02)
        client.close()
    steps = [later[0] - earlier[0] for earlier, later in zip(seen, seen[1:])]
    assert len(seen) > 40
    assert set(steps) == {1}, f"state-change counter skipped: {seen}"
    assert all(later[2] >= earlier[2] for earlier, later in zip(seen, seen[1:]))


async def test_opcua_replay_waits_for_first_value_read() -> None:
    async with simulate("mazak03", "--days", "1", "--speed", "20000", "--wait-for-client") as (_, lines):
        assert "waiting for a client that reads or subscribes to a Machine/ variable; the replay starts then" in lines
        async with Client(f"opc.tcp://127.0.0.1:{listening_port(lines)}/valuegate/simulator", timeout=10) as client:
            namespace = await client.get_namespace_index(MTCONNECT_NAMESPACE)  # reads the namespace array, not a Machine/ value
            clock = client.get_node(ua.NodeId("Machine/Clock", namespace))
            await asyncio.sleep(0.8)
            first = await clock.read_value()
            await asyncio.sleep(0.5)
            later = await clock.read_value()
    start = MtconnectOpcUaSimulator("mazak03", days=1).start_ms
    assert int(first.timestamp() * 1000) == start
    assert int(later.timestamp() * 1000) > start + 3_600_000


async def test_opcua_subscription_starts_replay() -> None:
    async with MtconnectOpcUaSimulator("mazak03", days=1, speed=20_000, wait_for_client=True) as simulator:
        async with Client(simulator.endpoint, timeout=10) as client:
            namespace = await client.get_namespace_index(MTCONNECT_NAMESPACE)
            await asyncio.sleep(0.3)
            assert not simulator.started
            assert simulator.now_ms == simulator.start_ms
            subscription = await client.create_subscription(20, None)
            await subscription.subscribe_data_change(client.get_node(ua.NodeId("Machine/Execution", namespace)))
            await asyncio.wait_for(simulator.wait_started(), 5)
            await asyncio.sleep(0.3)
            assert simulator.now_ms > simulator.start_ms


async def test_modbus_api_waits_for_client() -> None:
    async with BottlingModbusSimulator(days=1, speed=3600, wait_for_client=True) as simulator:
        await asyncio.sleep(0.3)
        assert not simulator.started
        client = AsyncModbusTcpClient("127.0.0.1", port=simulator.port)
        assert await client.connect()
        await client.read_coils(0, count=1)  # the done flag is no read of the line's values
        await asyncio.sleep(0.2)
        assert not simulator.started
        await client.read_holding_registers(0, count=1)
        await asyncio.wait_for(simulator.wait_started(), 5)
        client.close()
