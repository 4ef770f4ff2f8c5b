"""Modbus TCP client against a pymodbus server: grouping, function codes, exceptions, scaling and reconnects."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
import structlog
import structlog.testing

from valuegate.adapters.decode import encode_registers
from valuegate.adapters.devices import ModbusDeviceConfig, open_device
from valuegate.adapters.modbus_plan import plan_requests
from valuegate.adapters.tagmap import ModbusTag
from valuegate.services import free_port

from .servers import ModbusServer, first, tag_map


def config(port: int, **overrides) -> ModbusDeviceConfig:
    settings = {"id": "press-1", "host": "127.0.0.1", "port": port, "unit_id": 1, "tag_map": "unused", "poll_ms": 50,
                "timeout_ms": 300, "reconnect_min_ms": 50, "reconnect_max_ms": 200}
    settings.update(overrides)
    return ModbusDeviceConfig(**settings)


def registers(count: int, start: int = 0) -> list[dict]:
    return [{"name": f"r{start + i}", "table": "holding_register", "address": start + i, "type": "uint16", "order": "ABCD"}
            for i in range(count)]


def test_plan_packs_to_protocol_limits():
    tags = [ModbusTag(**tag) for tag in registers(300)]
    tags += [ModbusTag(name=f"c{i}", table="coil", address=i, type="bool") for i in range(2100)]
    plan = plan_requests(tags)
    spans = [(r.table, r.start, r.count) for r in plan]
    assert spans == [("coil", 0, 2000), ("coil", 2000, 100), ("holding_register", 0, 125), ("holding_register", 125, 125),
                     ("holding_register", 250, 50)]


def test_plan_keeps_multiword_tags_whole():
    tags = [ModbusTag(name=f"f{i}", table="input_register", address=2 * i, type="float32", order="CDAB") for i in range(70)]
    plan = plan_requests(tags)
    assert [(r.start, r.count) for r in plan] == [(0, 124), (124, 16)]


def test_plan_gap_and_isolation():
    tags = [ModbusTag(**tag) for tag in registers(3) + registers(2, start=10)]
    assert [(r.start, r.count) for r in plan_requests(tags)] == [(0, 3), (10, 2)]
    assert [(r.start, r.count) for r in plan_requests(tags, max_gap=7)] == [(0, 12)]
    isolated = plan_requests(tags, isolated=frozenset({"r1"}))
    assert sorted((r.start, r.count) for r in isolated) == [(0, 1), (1, 1), (2, 1), (10, 2)]


def test_plan_bits_in_one_register():
    tags = [ModbusTag(name=f"b{bit}", table="holding_register", address=4, type="bool", order="ABCD", bit=bit) for bit in (0, 3, 15)]
    (request,) = plan_requests(tags)
    assert (request.start, request.count) == (4, 1)
    samples, _ = request.decode("d", [0b1000_0000_0000_1000], 0, 0)
    assert [s.value for s in samples] == [False, True, True]


async def test_function_codes_and_unit_id(tmp_path: Path):
    tags = [
        {"name": "run", "table": "coil", "address": 1, "type": "bool"},
        {"name": "door", "table": "discrete_input", "address": 2, "type": "bool"},
        {"name": "speed", "table": "holding_register", "address": 0, "type": "float32", "order": "CDAB", "unit": "m/min"},
        {"name": "temp", "table": "input_register", "address": 3, "type": "int16", "order": "BADC", "scale": 0.1, "offset": -5},
        {"name": "batch", "table": "holding_register", "address": 2, "type": "string", "order": "ABCD", "length": 3},
    ]
    holding = {0: encode_registers(12.5, "float32", "CDAB") + encode_registers("B-42", "string", "ABCD", length=3)}
    inputs = {0: [0, 0, 0] + encode_registers(-215, "int16", "BADC")}
    async with ModbusServer(free_port(), unit_id=7, holding=holding, inputs=inputs, coils=[False, True, False],
                            discrete=[False, False, True]) as server:
        async with open_device(config(server.port, unit_id=7), tag_map(tmp_path, "fc", "modbus", tags)) as client:
            samples = {s.tag: s for s in await client.read_all()}
            assert client.stats["requests"] == 4  # one per function code 1, 2, 3, 4
        async with open_device(config(server.port, unit_id=8), tag_map(tmp_path, "fc", "modbus", tags)) as other:
            wrong_unit = await other.read_all()
    assert samples["run"].value is True
    assert samples["door"].value is True
    assert samples["speed"].value == 12.5
    assert samples["speed"].raw == [0x0000, 0x4148]
    assert samples["temp"].value == pytest.approx(-26.5)
    assert samples["temp"].raw == [0x29FF]
    assert samples["batch"].value == "B-42"
    assert all(s.status == "good" and s.time_source == "gateway" for s in samples.values())
    assert {s.status for s in wrong_unit} == {"bad"}


async def test_exception_isolates_failing_tag(tmp_path: Path):
    # Registers 0..3 exist, 4 does not: the grouped read of 0..4 gets the exception response 83 02.
    tags = registers(5)
    async with ModbusServer(free_port(), holding={0: [10, 11, 12, 13]}) as server:
        async with open_device(config(server.port), tag_map(tmp_path, "gap", "modbus", tags)) as client:
            first_read = {s.tag: s for s in await client.read_all()}
            assert "000100000003018302" in server.sent  # MBAP header, unit 1, function 0x83, exception code 02
            assert client.stats["exceptions"] >= 1
            before = len(server.sent)
            second_read = {s.tag: s for s in await client.read_all()}
            plan = [(r.start, r.count) for r in client.requests]
            requests_in_second_poll = len(server.sent) - before
    for read in (first_read, second_read):
        assert [read[f"r{i}"].value for i in range(4)] == [10, 11, 12, 13]
        assert all(read[f"r{i}"].status == "good" for i in range(4))
        assert read["r4"].status == "bad"
        assert read["r4"].detail == "illegal_data_address"
        assert read["r4"].value is None
    assert plan == [(0, 4), (4, 1)]
    assert requests_in_second_poll == 2


async def test_range_and_scale(tmp_path: Path):
    tags = [
        {"name": "level", "table": "holding_register", "address": 0, "type": "uint16", "order": "ABCD", "scale": 0.5, "range": [0, 100]},
        {"name": "pressure", "table": "holding_register", "address": 1, "type": "int16", "order": "ABCD", "offset": 1.5, "range": [0, 10]},
    ]
    async with ModbusServer(free_port(), holding={0: [150, 3]}) as server:
        async with open_device(config(server.port), tag_map(tmp_path, "range", "modbus", tags)) as client:
            level, pressure = await client.read_all()
            out_of_range = client.stats["out_of_range"]
    assert (level.value, level.status) == (75.0, "good")
    assert (pressure.value, pressure.status) == (4.5, "good")
    assert out_of_range == 0
    async with ModbusServer(free_port(), holding={0: [202, 9]}) as server:
        async with open_device(config(server.port), tag_map(tmp_path, "range", "modbus", tags)) as client:
            level, pressure = await client.read_all()
            assert client.stats["out_of_range"] == 2
    assert (level.value, level.status, level.detail, level.raw) == (None, "bad", "out_of_range", [202])
    assert (pressure.value, pressure.status, pressure.detail) == (None, "bad", "out_of_range")


async def test_refused_connection_then_recovery(tmp_path: Path):
    port = free_port()
    tags = registers(2)
    async with open_device(config(port), tag_map(tmp_path, "refused", "modbus", tags)) as client:
        stream = client.stream()
        outage = await first(stream, lambda batch: True)
        assert [(s.tag, s.status, s.detail) for s in outage] == [("r0", "bad", "disconnected"), ("r1", "bad", "disconnected")]
        await asyncio.sleep(0.5)  # several reconnect attempts, none yields another batch
        assert client.stats["refused"] >= 2
        async with ModbusServer(port, holding={0: [1, 2]}):
            batch = await first(stream, lambda batch: True)
            assert [(s.value, s.status) for s in batch] == [(1, "good"), (2, "good")]
        await stream.aclose()
    assert client.connected is False


async def test_server_restart_reconnects(tmp_path: Path):
    port = free_port()
    server = await ModbusServer(port, holding={0: [1, 5]}).start()
    async with open_device(config(port), tag_map(tmp_path, "restart", "modbus", registers(2))) as client:
        stream = client.stream()
        assert [s.value for s in await first(stream, lambda b: True)] == [1, 5]
        await server.stop()
        outage = await first(stream, lambda b: True)
        assert {s.detail for s in outage} == {"disconnected"}
        server = await ModbusServer(port, holding={0: [0, 6]}).start()
        batch = await first(stream, lambda b: b[0].status == "good")
        assert [s.value for s in batch] == [0, 6]
        assert client.stats["reconnects"] == 1
        assert client.stats["resets"] + client.stats["timeouts"] + client.stats.get("closed", 0) >= 1
        await stream.aclose()
    await server.stop()


async def test_timeout_counts_and_reconnects(tmp_path: Path):
    async with ModbusServer(free_port(), holding={0: [3]}) as server:
        async with open_device(config(server.port, timeout_ms=200), tag_map(tmp_path, "slow", "modbus", registers(1))) as client:
            stream = client.stream()
            assert (await first(stream, lambda b: True))[0].value == 3
            server.delay_s = 1.0
            outage = await first(stream, lambda b: True)
            assert (outage[0].status, outage[0].detail) == ("bad", "disconnected")
            assert client.stats["timeouts"] == 1
            server.delay_s = 0.0
            await first(stream, lambda b: b[0].status == "good")
            assert client.stats["reconnects"] >= 1
            await stream.aclose()


async def test_values_change_between_polls(tmp_path: Path):
    async with ModbusServer(free_port(), holding={0: [0, 0]}) as server:
        async with open_device(config(server.port), tag_map(tmp_path, "change", "modbus", registers(2))) as client:
            stream = client.stream()
            await first(stream, lambda b: True)
            await server.set_holding(0, [1, 9])
            batch = await first(stream, lambda b: b[0].value == 1)
            assert batch[1].value == 9
            await stream.aclose()


async def test_stream_stops_when_cancelled(tmp_path: Path):
    """Cancelling a consumer mid-request ends it, even when the response arrives in the same instant."""
    rng = random.Random(7)
    async with ModbusServer(free_port(), holding={0: list(range(100))}) as server:
        async with open_device(config(server.port, poll_ms=1), tag_map(tmp_path, "cancel", "modbus", registers(100))) as client:
            for _ in range(100):
                async def consume() -> None:
                    async for _batch in client.stream():
                        pass

                task = asyncio.create_task(consume())
                await asyncio.sleep(rng.uniform(0.001, 0.02))
                task.cancel()
                done, _ = await asyncio.wait({task}, timeout=2)
                assert task in done
                assert task.cancelled()


async def test_wrong_unit_id_logs_hint_once(tmp_path: Path):
    """Every request to unit 2 of a server that serves unit 1 gets server_device_failure: one warning names unit_id."""
    tags = registers(2) + [{"name": "run", "table": "coil", "address": 0, "type": "bool"}]
    async with ModbusServer(free_port(), holding={0: [1, 2]}, coils=[True]) as server:
        with structlog.testing.capture_logs() as wrong_logged:
            async with open_device(config(server.port, unit_id=2), tag_map(tmp_path, "unit", "modbus", tags)) as client:
                stream = client.stream()
                for _ in range(4):
                    batch = await first(stream, lambda b: True)
                await stream.aclose()
        with structlog.testing.capture_logs() as right_logged:
            async with open_device(config(server.port, unit_id=1), tag_map(tmp_path, "unit", "modbus", tags + registers(1, start=5))) as client:
                stream = client.stream()
                for _ in range(3):
                    right_batch = await first(stream, lambda b: True)
                await stream.aclose()
    assert {(s.status, s.detail) for s in batch} == {("bad", "server_device_failure")}
    (hint,) = [entry for entry in wrong_logged if entry["event"] == "modbus.all_requests_failed"]
    assert hint["log_level"] == "warning"
    assert hint["detail"] == "server_device_failure"
    assert hint["hint"] == "check the device's unit_id (2) against the PLC or gateway"
    # With the right unit id only register 5, which the server lacks, fails: no hint at unit_id.
    assert {s.tag for s in right_batch if s.status == "bad"} == {"r5"}
    assert [entry for entry in right_logged if entry["event"] == "modbus.all_requests_failed"] == []
