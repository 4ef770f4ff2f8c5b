"""`valuegate probe`: one read of every tag of every device, as a table or JSON, failing when a tag fails."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from asyncua import ua

from valuegate.adapters.tagmap import load_tag_map
from valuegate.services import free_port
from valuegate.simulators.modbus_server import RegisterServer

from .servers import ModbusServer, UaServer, write_tag_map

URI = "urn:valuegate:test:line"


async def run_probe(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "valuegate"), "probe", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, stdout.decode(), stderr.decode()


def write_config(tmp_path: Path, modbus_port: int, opcua_port: int) -> Path:
    write_tag_map(tmp_path, "press", "modbus", [
        {"name": "state", "table": "holding_register", "address": 0, "type": "uint16", "order": "ABCD"},
        {"name": "speed", "table": "holding_register", "address": 1, "type": "float32", "order": "CDAB", "unit": "strokes/min"},
        {"name": "missing", "table": "holding_register", "address": 3, "type": "uint16", "order": "ABCD"},
    ])
    write_tag_map(tmp_path, "oven", "opcua", [{"name": "state", "node": f"nsu={URI};s=Line/state"},
                                              {"name": "temperature", "node": f"nsu={URI};s=Line/temperature", "unit": "degC"}])
    config = tmp_path / "edge.yaml"
    config.write_text(
        f"""# other sections belong to the edge agent and are ignored by probe
gateway: {{id: gw-1}}
devices:
  - {{id: press-1, protocol: modbus, host: 127.0.0.1, port: {modbus_port}, unit_id: 1, tag_map: press.yaml, timeout_ms: 500}}
  - {{id: oven-1, protocol: opcua, endpoint: "opc.tcp://127.0.0.1:{opcua_port}/", tag_map: oven.yaml}}
""",
        encoding="utf-8",
    )
    return config


async def test_probe_json_and_failure(tmp_path: Path):
    modbus = ModbusServer(free_port(), holding={0: [1, 0x0000, 0x4148]})
    oven = UaServer(free_port(), {"state": ua.Variant(2, ua.VariantType.Int32), "temperature": ua.Variant(180.5, ua.VariantType.Double)})
    config = write_config(tmp_path, modbus.port, oven.port)
    async with modbus, oven:
        code, stdout, stderr = await run_probe(str(config), "--json")
        table_code, table, _ = await run_probe(str(config))
        good_code, good, good_stderr = await run_probe(str(config), "--json", "--device", "oven-1")
    rows = {(row["device"], row["tag"]): row for row in json.loads(stdout)}
    assert code == 1, stderr
    assert table_code == 1
    assert set(rows) == {("press-1", "state"), ("press-1", "speed"), ("press-1", "missing"), ("oven-1", "state"), ("oven-1", "temperature")}
    speed = rows[("press-1", "speed")]
    assert {key: speed[key] for key in ("raw", "value", "unit", "status")} == {
        "raw": [0x0000, 0x4148], "value": 12.5, "unit": "strokes/min", "status": "good"}
    assert speed["timestamp"].endswith("Z")
    assert (rows[("press-1", "missing")]["status"], rows[("press-1", "missing")]["detail"]) == ("bad", "illegal_data_address")
    # A failed read names where the tag map reads it, so the map's entry can be found and fixed.
    assert rows[("press-1", "missing")]["where"] == "holding_register 3"
    assert "holding_register 3" in table
    assert rows[("oven-1", "temperature")]["value"] == 180.5
    assert rows[("oven-1", "temperature")]["unit"] == "degC"
    assert "illegal_data_address" in table
    assert "4148" in table  # raw registers shown as hex words
    assert good_code == 0, good_stderr  # every tag of oven-1 was read
    assert [row["tag"] for row in json.loads(good)] == ["state", "temperature"]


async def test_probe_unreachable_names_reason(tmp_path: Path):
    config = write_config(tmp_path, free_port(), free_port())
    code, stdout, _ = await run_probe(str(config), "--json")
    rows = json.loads(stdout)
    assert code == 1
    assert {row["status"] for row in rows} == {"bad"}
    press = [row for row in rows if row["device"] == "press-1"]
    assert all(row["detail"].startswith("disconnected: connection refused") for row in press)


async def test_probe_table_gives_each_device_reason_once(tmp_path: Path):
    config = write_config(tmp_path, free_port(), free_port())
    code, stdout, _ = await run_probe(str(config))
    assert code == 1
    assert stdout.count("disconnected, see below") == 5
    # One line per device after the table, however many tags it has.
    assert stdout.count("press-1: disconnected: connection refused") == 1
    assert stdout.count("oven-1: disconnected: ") == 1


async def test_probe_setup_error_fails_only_its_device(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """A device that cannot be set up (here: its password variable is unset) gets its rows; the others are still read."""
    monkeypatch.delenv("VG_PROBE_OVEN_PASSWORD", raising=False)
    config = write_config(tmp_path, free_port(), free_port())
    config.write_text(config.read_text().replace('tag_map: oven.yaml}', 'tag_map: oven.yaml, auth: {method: username, username: u, password_env: VG_PROBE_OVEN_PASSWORD}}'),
                      encoding="utf-8")
    code, stdout, stderr = await run_probe(str(config), "--json")
    assert code == 1, stderr
    rows = json.loads(stdout)
    oven = [row for row in rows if row["device"] == "oven-1"]
    assert [row["tag"] for row in oven] == ["state", "temperature"]
    assert all(row["detail"] == "disconnected: device oven-1: environment variable VG_PROBE_OVEN_PASSWORD with the OPC UA password is not set; "
                                 "set it in the service environment" for row in oven)
    assert {row["device"] for row in rows} == {"press-1", "oven-1"}


async def test_probe_invalid_config(tmp_path: Path):
    config = write_config(tmp_path, 502, 4840)
    config.write_text(config.read_text().replace("protocol: modbus", "protocol: modbuss"), encoding="utf-8")
    code, _, stderr = await run_probe(str(config))
    assert code == 2
    assert "edge.yaml:4" in stderr
    assert "modbuss" in stderr
    assert "allowed: modbus, opcua" in stderr


async def test_probe_implausible_plc_time(tmp_path: Path):
    """A clock tag mapped with the wrong word order, and an OPC UA clock beyond int64, are bad with the reason."""
    clock_ms = 1_659_000_029_184
    low_word_first = [clock_ms & 0xFFFF, (clock_ms >> 16) & 0xFFFF, (clock_ms >> 32) & 0xFFFF, clock_ms >> 48]
    write_tag_map(tmp_path, "press", "modbus", [
        {"name": "state", "table": "holding_register", "address": 0, "type": "uint16", "order": "ABCD"},
        {"name": "clock", "table": "holding_register", "address": 1, "type": "uint64", "order": "ABCD", "role": "clock"},
        {"name": "since", "table": "holding_register", "address": 5, "type": "uint64", "order": "CDAB", "role": "state_since"},
    ])
    write_tag_map(tmp_path, "oven", "opcua", [{"name": "state", "node": f"nsu={URI};s=Line/state"},
                                              {"name": "clock", "node": f"nsu={URI};s=Line/clock", "role": "clock"}])
    # The same four words at 1..4 (read as ABCD) and at 5..8 (read as CDAB).
    modbus = ModbusServer(free_port(), holding={0: [1, *low_word_first, *low_word_first]})
    oven = UaServer(free_port(), {"state": ua.Variant(2, ua.VariantType.Int32), "clock": ua.Variant(2**63 + 5, ua.VariantType.UInt64)})
    config = tmp_path / "edge.yaml"
    config.write_text(
        f"""devices:
  - {{id: press-1, protocol: modbus, host: 127.0.0.1, port: {modbus.port}, unit_id: 1, tag_map: press.yaml, timeout_ms: 500}}
  - {{id: oven-1, protocol: opcua, endpoint: "opc.tcp://127.0.0.1:{oven.port}/", tag_map: oven.yaml}}
""",
        encoding="utf-8",
    )
    async with modbus, oven:
        code, stdout, stderr = await run_probe(str(config), "--json")
        table_code, table, table_stderr = await run_probe(str(config), "--device", "press-1")
    rows = {(row["device"], row["tag"]): row for row in json.loads(stdout)}
    assert code == 1, stderr
    clock = rows[("press-1", "clock")]
    assert (clock["status"], clock["value"], clock["raw"]) == ("bad", None, low_word_first)
    wrong = (low_word_first[0] << 48) | (low_word_first[1] << 32) | (low_word_first[2] << 16) | low_word_first[3]
    assert clock["detail"].startswith(f"implausible_time: value {wrong} ms is not a time between 2000-01-01 and 2100-01-01 UTC")
    assert (rows[("press-1", "since")]["status"], rows[("press-1", "since")]["value"]) == ("good", clock_ms)
    assert rows[("press-1", "state")]["status"] == "good"
    opcua_clock = rows[("oven-1", "clock")]
    assert (opcua_clock["status"], opcua_clock["raw"]) == ("bad", 2**63 + 5)
    assert opcua_clock["detail"].startswith(f"implausible_time: value {2**63 + 5} ms")
    assert table_code == 1
    assert "implausible_time" in table
    assert "1 of 3 tags failed" in table_stderr


async def test_probe_hints_at_wrong_unit_id(tmp_path: Path):
    """The simulator serves unit 1; a device configured as unit 7 fails every tag with the same exception."""
    write_tag_map(tmp_path, "press", "modbus", [
        {"name": f"r{i}", "table": "holding_register", "address": i, "type": "uint16", "order": "ABCD"} for i in range(3)
    ])  # fmt: skip
    server = RegisterServer(load_tag_map(tmp_path / "press.yaml"), port=0, unit_id=1)
    await server.start()
    try:
        config = tmp_path / "edge.yaml"
        line = f"  - {{id: press-1, protocol: modbus, host: 127.0.0.1, port: {server.port}, unit_id: UNIT, tag_map: press.yaml, timeout_ms: 500}}\n"
        config.write_text("devices:\n" + line.replace("UNIT", "7"), encoding="utf-8")
        code, stdout, stderr = await run_probe(str(config))
        config.write_text("devices:\n" + line.replace("UNIT", "1"), encoding="utf-8")
        good_code, _, good_stderr = await run_probe(str(config))
    finally:
        await server.stop()
    assert code == 1, stderr
    assert "press-1: all 3 tags failed with server_device_failure: check the device's unit_id (7)" in stderr
    assert "3 of 3 tags failed" in stderr
    assert good_code == 0, good_stderr
    assert "unit_id" not in good_stderr


async def test_probe_float32_digits(tmp_path: Path):
    """The table shows a float32 with the digits it carries; JSON keeps the exact value as a float64."""
    modbus = ModbusServer(free_port(), holding={0: [1, 0x147B, 0xBF8E]})  # -1.11 as float32 0xBF8E147B, CDAB
    config = write_config(tmp_path, modbus.port, free_port())
    async with modbus:
        _, table, _ = await run_probe(str(config), "--device", "press-1")
        _, stdout, _ = await run_probe(str(config), "--device", "press-1", "--json")
    speed = next(row for row in json.loads(stdout) if row["tag"] == "speed")
    assert speed["value"] == -1.1100000143051147
    assert " -1.11 " in table
    assert "-1.1100000143051147" not in table


async def test_probe_timeout_prints_no_library_frames(tmp_path: Path):
    """A device that accepts the connection but never responds: probe names the timeout, and pymodbus's frame dumps stay out."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(1 << 16):  # reads every request and responds to none, until the client disconnects
            pass
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    write_tag_map(tmp_path, "press", "modbus", [{"name": "state", "table": "holding_register", "address": 0, "type": "uint16", "order": "ABCD"}])
    config = tmp_path / "edge.yaml"
    config.write_text(
        f"devices:\n  - {{id: press-1, protocol: modbus, host: 127.0.0.1, port: {port}, unit_id: 1, tag_map: press.yaml, timeout_ms: 300}}\n",
        encoding="utf-8",
    )
    try:
        code, stdout, stderr = await run_probe(str(config), "--json")
    finally:
        server.close()
    rows = json.loads(stdout)
    assert code == 1
    assert [row["status"] for row in rows] == ["bad"]
    assert "0x" not in stderr, stderr
    assert "pymodbus" not in stderr.lower(), stderr
