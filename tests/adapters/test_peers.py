"""Device clients against servers written by others: jsmodbus, modbus-serial and node-opcua, started by the harness."""

from __future__ import annotations

import asyncio
import struct
import time
from pathlib import Path

import pytest
from asyncua import Client, ua

from valuegate.adapters.devices import ModbusDeviceConfig, OpcUaDeviceConfig, open_device
from valuegate.adapters.rules import StateEvaluator
from valuegate.adapters.tagmap import load_tag_map, shipped_tag_map_dir
from valuegate.services import free_port

from .servers import first, tag_map

pytestmark = pytest.mark.peer

PEER_URI = "urn:valuegate:peer:line"


@pytest.fixture(scope="session")
def node_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One PKI folder for every node-opcua server of the session, so its certificate is made once."""
    return tmp_path_factory.mktemp("node-opcua-pki")


def modbus(port: int, unit_id: int = 1) -> ModbusDeviceConfig:
    return ModbusDeviceConfig(id="peer", host="127.0.0.1", port=port, unit_id=unit_id, tag_map="unused", poll_ms=50,
                              timeout_ms=500, reconnect_min_ms=50, reconnect_max_ms=200)


def opcua(port: int, **overrides) -> OpcUaDeviceConfig:
    settings = {"id": "peer", "endpoint": f"opc.tcp://127.0.0.1:{port}/", "tag_map": "unused", "publishing_interval_ms": 50,
                "sampling_ms": 0, "reconnect_min_ms": 100, "reconnect_max_ms": 500}
    settings.update(overrides)
    return OpcUaDeviceConfig(**settings)


def peer_tags(*names: str) -> list[dict]:
    return [{"name": name, "node": f"nsu={PEER_URI};s=Line/{name}"} for name in names]


async def test_jsmodbus_filler_with_shipped_map(start_node):
    port = free_port()
    start_node("modbus_filler.js", str(port), port=port)
    mapping = load_tag_map(shipped_tag_map_dir() / "demo" / "bottling-filler-modbus.yaml")
    evaluator = StateEvaluator(mapping)
    categories: set[tuple[str, str | None]] = set()
    async with open_device(modbus(port), mapping) as client:
        samples = {s.tag: s for s in await client.read_all()}
        now = time.time() * 1000
        stream = client.stream()
        deadline = asyncio.get_running_loop().time() + 3
        while asyncio.get_running_loop().time() < deadline and len(categories) < 2:
            for sample in await first(stream, lambda b: True):
                evaluator.update(sample)
            result = evaluator.evaluate()
            categories.add((result.category, result.reason))
        await stream.aclose()
    assert all(s.status == "good" for s in samples.values())
    # The peer writes the clock low word first (CDAB) and state_since high word first (ABCD).
    assert abs(samples["clock"].value - now) < 5_000
    assert samples["state_since"].value <= samples["clock"].value
    assert samples["state"].value in (1, 2)
    assert 0 <= samples["containers"].value <= 65535
    assert client.stats["requests"] >= 1
    assert ("running", None) in categories
    assert ("unplanned_stop", "17") in categories


async def test_modbus_serial_vector_server(start_node, tmp_path: Path):
    port = free_port()
    start_node("modbus_vector.js", str(port), port=port)
    tags = [
        {"name": f"f{i}", "table": "holding_register", "address": 2 * i, "type": "float32", "order": "CDAB"} for i in range(3)
    ] + [
        {"name": f"h{address}", "table": "holding_register", "address": address, "type": "uint16", "order": "ABCD"} for address in range(6, 10)
    ] + [
        {"name": "ir4", "table": "input_register", "address": 4, "type": "uint16", "order": "ABCD"},
        {"name": "coil1", "table": "coil", "address": 1, "type": "bool"},
        {"name": "coil2", "table": "coil", "address": 2, "type": "bool"},
        {"name": "di0", "table": "discrete_input", "address": 0, "type": "bool"},
    ]
    async with open_device(modbus(port, unit_id=3), tag_map(tmp_path, "vector", "modbus", tags)) as client:
        first_read = {s.tag: s for s in await client.read_all()}
        second_read = {s.tag: s for s in await client.read_all()}
        plan = [(r.table, r.start, r.count) for r in client.requests]
    minus_1_11 = struct.unpack(">f", struct.pack(">f", -1.11))[0]
    for read in (first_read, second_read):
        assert [read[f"f{i}"].value for i in range(3)] == [1.5, 3.0, minus_1_11]
        assert [read[f"h{a}"].value for a in (6, 7, 9)] == [1006, 1007, 1009]
        assert (read["h8"].status, read["h8"].detail, read["h8"].value) == ("bad", "illegal_data_address", None)
        assert (read["ir4"].value, read["coil1"].value, read["coil2"].value, read["di0"].value) == (2004, True, False, True)
    assert ("holding_register", 8, 1) in plan
    assert ("holding_register", 0, 8) in plan


async def test_node_opcua_subscription_status_and_refusal(start_node, node_pki: Path, tmp_path: Path):
    port = free_port()
    start_node("opcua_server.js", str(port), str(node_pki), port=port)
    tags = peer_tags("state", "count", "speed") + [{"name": "ghost", "node": f"nsu={PEER_URI};s=Line/ghost"}]
    mapping = tag_map(tmp_path, "peer", "opcua", tags)
    evaluator = StateEvaluator(mapping)
    async with Client(f"opc.tcp://127.0.0.1:{port}/") as plc:
        index = await plc.get_namespace_index(PEER_URI)

        async def write(name: str, value, variant_type) -> None:
            await plc.get_node(ua.NodeId(f"Line/{name}", index)).write_value(ua.DataValue(ua.Variant(value, variant_type)))

        async with open_device(opcua(port, session_timeout_ms=4_000_000), mapping) as client:
            # node-opcua grants at most 50 minutes whatever the client asks for.
            assert client.session_timeout_ms == 3_000_000
            assert client.refused == {"ghost": "BadNodeIdUnknown"}
            stream = client.stream()
            initial = await first(stream, lambda b: {s.tag for s in b} >= {"state", "count", "speed"})
            for sample in initial:
                evaluator.update(sample)
            assert evaluator.evaluate().category == "running"
            assert all(s.time_source == "plc" for s in initial if s.tag != "ghost")
            await write("count", 41, ua.VariantType.UInt32)
            change = await first(stream, lambda b: any(s.tag == "count" for s in b))
            assert [s.value for s in change if s.tag == "count"] == [41]
            await write("fault", True, ua.VariantType.Boolean)
            bad = await first(stream, lambda b: any(s.tag == "state" for s in b))
            (state,) = [s for s in bad if s.tag == "state"]
            assert (state.status, state.detail, state.value) == ("bad", "BadCommunicationError", None)
            evaluator.update(state)
            assert evaluator.evaluate().category == "offline"
            await write("fault", False, ua.VariantType.Boolean)
            good = await first(stream, lambda b: any(s.tag == "state" for s in b))
            for sample in good:
                evaluator.update(sample)
            assert evaluator.evaluate().category == "running"
            await stream.aclose()


async def test_node_opcua_restart_renumbered(start_node, node_pki: Path, tmp_path: Path):
    port = free_port()
    server = start_node("opcua_server.js", str(port), str(node_pki), port=port)
    mapping = tag_map(tmp_path, "peer-restart", "opcua", peer_tags("state", "count"))
    async with open_device(opcua(port), mapping) as client:
        stream = client.stream()
        await first(stream, lambda b: len(b) == 2)
        server.stop()
        outage = await first(stream, lambda b: True, timeout_s=15)
        assert {s.detail for s in outage} == {"disconnected"}
        start_node("opcua_server.js", str(port), str(node_pki), "--namespaces-before", "3", port=port)
        batch = await first(stream, lambda b: len(b) == 2 and all(s.status == "good" for s in b), timeout_s=30)
        assert {(s.tag, s.value) for s in batch} == {("state", 1), ("count", 0)}
        assert client.monitored_items == 2
        assert client.refused == {}
        assert client.stats["reconnects"] == 1
        await stream.aclose()


async def test_node_opcua_operation_limits(start_node, node_pki: Path, tmp_path: Path):
    port = free_port()
    start_node("opcua_server.js", str(port), str(node_pki), "--max-items-per-call", "2", port=port)
    mapping = tag_map(tmp_path, "peer-limits", "opcua", peer_tags("state", "count", "speed", "fault"))
    async with open_device(opcua(port), mapping) as client:
        assert client.limits.max_monitored_items_per_call == 2
        assert client.monitored_items == 4
        assert client.refused == {}
