"""Log lines of a device's values turning Bad and good again, and of an OPC UA reconnect after an outage."""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog
from asyncua import ua

from valuegate.adapters.devices import ModbusDeviceConfig, OpcUaDeviceConfig, open_device
from valuegate.adapters.samples import Sample
from valuegate.adapters.valuelog import BadValueLog
from valuegate.services import free_port

from .servers import ModbusServer, UaServer, first, tag_map

URI = "urn:valuegate:test:line"
SENSOR = ua.StatusCode(ua.StatusCodes.BadSensorFailure)


def opcua_config(endpoint: str) -> OpcUaDeviceConfig:
    return OpcUaDeviceConfig(id="line-1", endpoint=endpoint, tag_map="unused", publishing_interval_ms=50, sampling_ms=0,
                             timeout_ms=2000, reconnect_min_ms=50, reconnect_max_ms=200)  # fmt: skip


def node_tags(*names: str) -> list[dict]:
    return [{"name": name, "node": f"nsu={URI};s=Line/{name}"} for name in names]


def lines(logged: list[dict], suffix: str) -> list[dict]:
    return [entry for entry in logged if entry["event"].endswith(suffix)]


async def test_opcua_all_tags_bad_logs_once(tmp_path: Path) -> None:
    variables = {name: ua.Variant(1, ua.VariantType.Int32) for name in ("a", "b", "c")}
    async with UaServer(free_port(), variables) as server:
        async with open_device(opcua_config(server.endpoint), tag_map(tmp_path, "bad-all", "opcua", node_tags("a", "b", "c"))) as client:
            stream = client.stream()
            await first(stream, lambda b: len(b) == 3)
            with structlog.testing.capture_logs() as logged:
                bad: set[str] = set()
                for name in ("a", "b", "c"):
                    await server.write(name, 1, status=SENSOR)
                await first(stream, lambda b: bad.update(s.tag for s in b if s.status == "bad") or bad == {"a", "b", "c"})
                await asyncio.sleep(0.2)
                good: set[str] = set()
                for name in ("a", "b", "c"):
                    await server.write(name, 2)
                await first(stream, lambda b: good.update(s.tag for s in b if s.status == "good") or good == {"a", "b", "c"})
            await stream.aclose()

    warnings = [entry for entry in logged if entry["log_level"] == "warning"]
    assert [entry["event"] for entry in warnings] == ["opcua.values_bad"], "one warning for the whole Bad spell"
    (turned_bad,) = warnings
    assert turned_bad["status"] == "BadSensorFailure"
    assert turned_bad["device"] == "line-1"
    assert turned_bad["count"] == len(turned_bad["tags"]) >= 1
    (recovered,) = lines(logged, ".values_good")
    assert recovered["log_level"] == "info"
    assert (recovered["status"], recovered["tags"], recovered["count"]) == ("BadSensorFailure", ["a", "b", "c"], 3)
    assert recovered["bad_s"] >= 0.2
    assert logged.index(recovered) > logged.index(turned_bad)


async def test_modbus_out_of_range_logs_bad_and_good(tmp_path: Path) -> None:
    port = free_port()
    config = ModbusDeviceConfig(id="press-1", host="127.0.0.1", port=port, unit_id=1, tag_map="unused", poll_ms=50,
                                timeout_ms=300, reconnect_min_ms=50, reconnect_max_ms=100)  # fmt: skip
    tags = [{"name": "level", "table": "holding_register", "address": 0, "type": "uint16", "order": "ABCD", "range": [0, 100]},
            {"name": "state", "table": "holding_register", "address": 1, "type": "uint16", "order": "ABCD"}]
    async with ModbusServer(port, holding={0: [50, 1]}) as server:
        async with open_device(config, tag_map(tmp_path, "range", "modbus", tags)) as client:
            stream = client.stream()
            await first(stream, lambda b: b[0].status == "good")
            with structlog.testing.capture_logs() as logged:
                await server.set_holding(0, [900])
                for _ in range(3):
                    await first(stream, lambda b: b[0].detail == "out_of_range")
                await server.set_holding(0, [60])
                await first(stream, lambda b: b[0].status == "good")
                await first(stream, lambda b: True)
            await stream.aclose()

    assert [(e["event"], e["log_level"]) for e in logged if e["log_level"] in ("info", "warning")] == [
        ("modbus.values_bad", "warning"), ("modbus.values_good", "info")]
    turned_bad, recovered = lines(logged, ".values_bad")[0], lines(logged, ".values_good")[0]
    assert (turned_bad["status"], turned_bad["tags"], turned_bad["count"], turned_bad["device"]) == ("out_of_range", ["level"], 1, "press-1")
    assert (recovered["status"], recovered["tags"], recovered["count"]) == ("out_of_range", ["level"], 1)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def bad(tag: str, detail: str) -> Sample:
    return Sample("m1", tag, 0, "plc", 0, None, 1, "bad", detail)


def good(tag: str) -> Sample:
    return Sample("m1", tag, 0, "plc", 0, 1, 1, "good")


def test_value_log_holds_back_spells_in_pairs() -> None:
    clock = FakeClock()
    with structlog.testing.capture_logs() as logged:
        values = BadValueLog(structlog.get_logger("test"), "opcua", interval_s=60.0, clock=clock)
        for second in (0, 10, 20):
            clock.now = 1000.0 + second
            values.observe([bad("a", "BadSensorFailure")])
            clock.now += 2
            values.observe([good("a")])
        clock.now = 1070.0
        values.observe([bad("a", "BadSensorFailure")])
        clock.now = 1075.5
        values.observe([good("a")])

    shown = [(e["event"], e.get("repeats_not_logged"), e.get("bad_s")) for e in logged]
    # Each warning let through has its recovery line; the two spells in between are held back, both lines of each.
    assert shown == [
        ("opcua.values_bad", 0, None), ("opcua.values_good", None, 2.0),
        ("opcua.values_bad", 2, None), ("opcua.values_good", None, 5.5),
    ]


def test_value_log_separates_statuses() -> None:
    clock = FakeClock()
    with structlog.testing.capture_logs() as logged:
        values = BadValueLog(structlog.get_logger("test"), "modbus", clock=clock)
        values.observe([bad("level", "out_of_range"), good("state")])
        values.observe([bad("level", "out_of_range"), bad("state", "IllegalDataAddress")])
        values.observe([bad("level", "out_of_range"), good("state")])
    shown = [(e["event"], e["status"], e["tags"]) for e in logged]
    assert shown == [
        ("modbus.values_bad", "out_of_range", ["level"]),
        ("modbus.values_bad", "IllegalDataAddress", ["state"]),
        ("modbus.values_good", "IllegalDataAddress", ["state"]),
    ]


def test_value_log_skips_reported_elsewhere() -> None:
    with structlog.testing.capture_logs() as logged:
        values = BadValueLog(structlog.get_logger("test"), "opcua")
        values.observe([bad("a", "disconnected"), bad("b", "implausible_time: value 5 ms is not a time"), bad("c", "BadNodeIdUnknown")],
                       skip={"c"})
        values.observe([good("a"), good("b"), good("c")])
    assert logged == []


def test_value_log_names_ten_tags() -> None:
    with structlog.testing.capture_logs() as logged:
        values = BadValueLog(structlog.get_logger("test"), "opcua")
        values.observe([bad(f"t{i:02}", "BadSensorFailure") for i in range(14)])
    (line,) = logged
    assert line["tags"] == [f"t{i:02}" for i in range(10)]
    assert line["count"] == 14


async def test_opcua_reconnect_logs_outage(tmp_path: Path) -> None:
    port = free_port()
    variables = {name: ua.Variant(0, ua.VariantType.Int32) for name in ("a", "b")}
    server = await UaServer(port, dict(variables)).start()
    with structlog.testing.capture_logs() as logged:
        async with open_device(opcua_config(server.endpoint), tag_map(tmp_path, "outage", "opcua", node_tags("a", "b"))) as client:
            stream = client.stream()
            await first(stream, lambda b: len(b) == 2)
            await server.stop()
            await first(stream, lambda b: True)
            await asyncio.sleep(0.3)
            server = await UaServer(port, dict(variables)).start()
            await first(stream, lambda b: len(b) == 2 and all(s.status == "good" for s in b), timeout_s=15)
            await stream.aclose()
    await server.stop()

    connected = lines(logged, "opcua.connected")
    assert len(connected) == 2, "one line at start, one at the end of the outage"
    at_start, after_outage = connected
    assert set(at_start["limits"]) == {"max_nodes_per_read", "max_nodes_per_browse", "max_nodes_per_translate", "max_monitored_items_per_call"}
    assert all(isinstance(value, int) for value in at_start["limits"].values())
    assert "failures" not in at_start
    assert "limits" not in after_outage
    assert after_outage["failures"] >= 1
    assert after_outage["outage_s"] >= 0.3
    assert (after_outage["mode"], after_outage["monitored_items"], after_outage["refused"]) == ("subscribe", 2, 0)
    assert logged.index(after_outage) > logged.index(lines(logged, "opcua.disconnected")[0])
