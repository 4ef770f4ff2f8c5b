"""Fault specifications, and each Modbus fault seen by a real pymodbus client."""

from __future__ import annotations

import asyncio
import time

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException

from valuegate.simulators.faults import FaultError, parse_fault
from valuegate.simulators.modbus_line import BottlingModbusSimulator


def test_parse_fault_options() -> None:
    spec = parse_fault("exception:start=10,count=2,at=1.5", protocol="modbus")
    assert (spec.kind, spec.at_s, spec.options) == ("exception", 1.5, {"start": 10, "count": 2})
    assert spec.duration_s == float("inf")
    slow = parse_fault("slow")
    assert (slow.options["delay_ms"], slow.duration_s) == (500, 10.0)
    bad = parse_fault("bad:node=Execution,for=2", protocol="opcua")
    assert (bad.options, bad.duration_s) == ({"node": "Execution", "status": "BadSensorFailure"}, 2.0)
    back = parse_fault("clock_step:by=-1800", protocol="modbus")
    assert (back.options, back.duration_s) == ({"by": -1800.0}, None)
    ahead = parse_fault("clock_step:by=7200", protocol="opcua")
    assert (ahead.kind, ahead.options) == ("clock_step", {"by": 7200.0})


@pytest.mark.parametrize(
    ("text", "protocol", "message"),
    [
        ("melt", None, "unknown fault kind 'melt'; choose one of exception, timeout"),
        ("exception:start=10", "modbus", "exception needs start=ADDRESS and count=N"),
        ("exception:start=ten,count=2", "modbus", "start='ten' is not a valid int"),
        ("exception:start=1,count=0", "modbus", "count=0 covers no register"),
        ("timeout:for=-1", "modbus", "for=-1.0 must be 0 or more"),
        ("timeout:speed=3", "modbus", "unknown option 'speed' for timeout; allowed: at, for"),
        ("timeout:for", "modbus", "option 'for' needs a value: write for=VALUE"),
        ("bad", "modbus", "'bad' is not available over modbus"),
        ("exception:start=1,count=1", "opcua", "'exception' is not available over opcua"),
        ("bad:status=GoodNonsense", "opcua", "status 'GoodNonsense' is not an OPC UA status code name"),
        ("bad:status=UncertainLastUsableValue", "opcua", "'UncertainLastUsableValue' is uncertain, not bad"),
        ("uncertain:status=BadSensorFailure", "opcua", "'BadSensorFailure' is bad, not uncertain"),
        ("clock_step", "modbus", "clock_step needs by=SECONDS (negative sets the clock back)"),
        ("clock_step", "opcua", "clock_step needs by=SECONDS (negative sets the clock back)"),
    ],
)
def test_parse_fault_rejects(text: str, protocol: str | None, message: str) -> None:
    with pytest.raises(FaultError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_fault(text, protocol=protocol)


async def _client(sim: BottlingModbusSimulator, timeout: float = 1.0) -> AsyncModbusTcpClient:
    client = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=timeout, retries=0)
    assert await client.connect()
    return client


async def test_exception_for_configured_addresses() -> None:
    async with BottlingModbusSimulator(days=1, paused=True, faults=["exception:start=10,count=2"]) as sim:
        sim.resume()
        await asyncio.sleep(0.1)
        client = await _client(sim)
        try:
            counters = await client.read_holding_registers(10, count=2)
            assert counters.isError()
            assert counters.exception_code == 0x02
            overlapping = await client.read_holding_registers(8, count=4)
            assert overlapping.exception_code == 0x02
            state = await client.read_holding_registers(0, count=10)
            assert not state.isError()
            assert len(state.registers) == 10
            written = await client.write_register(0, 1)
            assert written.exception_code == 0x02
        finally:
            client.close()


async def test_timeout_slow_and_drop() -> None:
    async with BottlingModbusSimulator(days=1, paused=True) as sim:
        client = await _client(sim, timeout=0.3)
        try:
            await sim.inject("timeout:for=0.6")
            with pytest.raises((ModbusIOException, ConnectionException, asyncio.TimeoutError)):
                await client.read_holding_registers(0, count=12)
        finally:
            client.close()
        await asyncio.sleep(0.7)

        client = await _client(sim)
        try:
            assert not (await client.read_holding_registers(0, count=12)).isError()
            await sim.inject("slow:delay_ms=300,for=5")
            started = time.monotonic()
            assert not (await client.read_holding_registers(0, count=12)).isError()
            assert time.monotonic() - started >= 0.3
        finally:
            client.close()

        client = await _client(sim)
        try:
            sim.server.delay_responses(0)
            await sim.inject("drop")
            await asyncio.sleep(0.1)
            assert not client.connected
        finally:
            client.close()


async def test_server_and_plc_restart() -> None:
    async with BottlingModbusSimulator(speed=200_000, days=1, paused=True) as sim:
        port = sim.port
        sim.resume()
        await sim.wait_done(timeout_s=30)
        client = await _client(sim)
        before = (await client.read_holding_registers(0, count=12)).registers
        client.close()
        assert before[11] == len(sim.truth.change_ms)
        assert before[10] == 50_000 + 2_849

        restart = asyncio.create_task(sim.inject("server_restart:down=0.5"))
        await asyncio.sleep(0.2)
        refused = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=0.2, retries=0)
        assert not await refused.connect()
        refused.close()
        await restart
        assert sim.port == port
        client = await _client(sim)
        assert (await client.read_holding_registers(0, count=12)).registers == before
        client.close()

        await sim.inject("plc_restart:down=0.1")
        client = await _client(sim)
        after = (await client.read_holding_registers(0, count=12)).registers
        client.close()
        # The PLC counts containers and state changes again from 0 after its restart.
        assert after[10] == 0
        assert after[11] == 0
        assert after[0] == before[0]

        await sim.inject("counter_wrap:margin=3")
        client = await _client(sim)
        assert (await client.read_holding_registers(10, count=1)).registers == [65_533]
        await sim.inject("counter_reset")
        assert (await client.read_holding_registers(10, count=1)).registers == [0]
        client.close()


async def test_scheduled_fault_runs_at_time() -> None:
    async with BottlingModbusSimulator(days=1, faults=["exception:start=0,count=1,at=0.3,for=0.5"]) as sim:
        client = await _client(sim)
        try:
            assert not (await client.read_holding_registers(0, count=1)).isError()
            await asyncio.sleep(0.45)
            assert (await client.read_holding_registers(0, count=1)).exception_code == 0x02
            await asyncio.sleep(0.6)
            assert not (await client.read_holding_registers(0, count=1)).isError()
        finally:
            client.close()
