"""Device settings of an edge configuration: paths, defaults and errors naming file, line, field and allowed values."""

from __future__ import annotations

from pathlib import Path

import pytest

from valuegate.adapters.devices import ModbusDeviceConfig, OpcUaDeviceConfig, load_devices
from valuegate.adapters.errors import ConfigError
from valuegate.adapters.tagmap import shipped_tag_map_dir

from .servers import write_tag_map

CONFIG = """gateway: {id: gw-7}          # owned by the edge agent, ignored here
devices:
  - id: filler-1
    protocol: modbus
    host: 127.0.0.1
    unit_id: 3
    tag_map: demo/bottling-filler-modbus.yaml
  - id: cnc-1
    protocol: opcua
    endpoint: opc.tcp://127.0.0.1:4840/
    tag_map: maps/line.yaml
    security: {policy: Basic256Sha256, mode: SignAndEncrypt, trusted_dir: pki/trusted}
    auth: {method: username, username: edge, password_env: CNC_PASSWORD}
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "maps").mkdir(exist_ok=True)
    (tmp_path / "pki" / "trusted").mkdir(parents=True, exist_ok=True)
    write_tag_map(tmp_path / "maps", "line", "opcua", [{"name": "state", "node": "nsu=urn:x;s=State"}])
    path = tmp_path / "edge.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def errors(tmp_path: Path, text: str) -> list:
    with pytest.raises(ConfigError) as caught:
        load_devices(write(tmp_path, text))
    return caught.value.issues


def test_load_devices(tmp_path: Path):
    filler, cnc = load_devices(write(tmp_path, CONFIG))
    assert isinstance(filler, ModbusDeviceConfig)
    assert (filler.protocol, filler.port, filler.unit_id, filler.poll_ms) == ("modbus", 502, 3, 1000)
    assert filler.tag_map == str(shipped_tag_map_dir() / "demo" / "bottling-filler-modbus.yaml")
    assert isinstance(cnc, OpcUaDeviceConfig)
    assert cnc.protocol == "opcua"
    assert cnc.tag_map == str(tmp_path / "maps" / "line.yaml")
    assert cnc.security.trusted_dir == str(tmp_path / "pki" / "trusted")
    assert cnc.security.pki_dir == str(tmp_path / "pki")
    assert cnc.auth.password_env == "CNC_PASSWORD"


def test_unknown_protocol_lists_allowed(tmp_path: Path):
    (issue,) = errors(tmp_path, CONFIG.replace("protocol: modbus", "protocol: profinet"))
    assert (issue.line, issue.field, issue.value, issue.allowed) == (4, "$.devices[0].protocol", "profinet", "modbus, opcua")


def test_enum_inside_device(tmp_path: Path):
    (issue,) = errors(tmp_path, CONFIG.replace("policy: Basic256Sha256", "policy: Basic128Rsa15"))
    assert (issue.line, issue.field, issue.value) == (12, "$.devices[1].security.policy", "Basic128Rsa15")
    assert issue.allowed == "Aes128Sha256RsaOaep, Basic256Sha256, None"


def test_unknown_field(tmp_path: Path):
    (issue,) = errors(tmp_path, CONFIG.replace("unit_id: 3", "unit_id: 3\n    slave: 3"))
    assert issue.field == "$.devices[0].slave"
    assert "unit_id" in issue.allowed


def test_ranges_and_duplicates(tmp_path: Path):
    text = CONFIG.replace("unit_id: 3", "unit_id: 300\n    port: 0\n    poll_ms: 0").replace("id: cnc-1", "id: filler-1")
    found = {issue.field: issue for issue in errors(tmp_path, text)}
    assert found["$.devices[0].unit_id"].allowed == "0..255"
    assert found["$.devices[0].unit_id"].value == 300
    assert found["$.devices[0].port"].allowed == "1..65535"
    assert "$.devices[0].poll_ms" in found
    assert "duplicate device id" in found["$.devices[1].id"].message


def test_security_combinations(tmp_path: Path):
    text = CONFIG.replace("mode: SignAndEncrypt, trusted_dir: pki/trusted", "mode: None")
    found = {issue.field: issue for issue in errors(tmp_path, text)}
    assert "cannot be used with mode None" in found["$.devices[1].security.mode"].message
    assert "pinned" in found["$.devices[1].security"].message
    text = CONFIG.replace(", password_env: CNC_PASSWORD", "")
    (issue,) = errors(tmp_path, text)
    assert issue.field == "$.devices[1].auth"


def test_missing_and_mismatched_tag_map(tmp_path: Path):
    (issue,) = errors(tmp_path, CONFIG.replace("maps/line.yaml", "maps/none.yaml"))
    assert (issue.field, issue.value) == ("$.devices[1].tag_map", "maps/none.yaml")
    (issue,) = errors(tmp_path, CONFIG.replace("maps/line.yaml", "demo/bottling-filler-modbus.yaml"))
    assert "is for modbus, the device uses opcua" in issue.message


def test_errors_in_tag_map_are_reported(tmp_path: Path):
    path = write(tmp_path, CONFIG)
    line_map = tmp_path / "maps" / "line.yaml"
    line_map.write_text(line_map.read_text().replace("category: running", "category: busy"), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_devices(path)
    (issue,) = caught.value.issues
    assert issue.file == str(line_map)
    assert issue.value == "busy"


@pytest.mark.parametrize(
    ("setting", "field", "kind"),
    [
        ("trusted_dir: pki/trusted", "security.trusted_dir", "folder"),
        ("server_certificate: pki/nosuch.der", "security.server_certificate", "file"),
    ],
)
def test_missing_security_path(tmp_path: Path, setting: str, field: str, kind: str):
    text = CONFIG.replace("trusted_dir: pki/trusted", setting)
    path = write(tmp_path, text)
    (tmp_path / "pki" / "trusted").rmdir()
    with pytest.raises(ConfigError) as caught:
        load_devices(path)
    (issue,) = caught.value.issues
    assert (issue.line, issue.field) == (12, f"$.devices[1].{field}")
    assert issue.value == str(tmp_path / setting.split(": ")[1])
    assert issue.message.startswith(f"{kind} not found")


def test_missing_user_certificate_files(tmp_path: Path):
    text = CONFIG.replace(
        "auth: {method: username, username: edge, password_env: CNC_PASSWORD}",
        "auth: {method: certificate, certificate: user.der, private_key: user.pem}",
    )
    path = write(tmp_path, text)
    (tmp_path / "user.der").write_bytes(b"0")
    found = {issue.field: issue for issue in errors(tmp_path, text)}
    assert list(found) == ["$.devices[1].auth.private_key"]
    assert found["$.devices[1].auth.private_key"].line == 13
    assert found["$.devices[1].auth.private_key"].value == str(tmp_path / "user.pem")
    assert path.exists()


def test_no_devices_key(tmp_path: Path):
    (issue,) = errors(tmp_path, "gateway: {id: x}\n")
    assert "devices" in issue.message
