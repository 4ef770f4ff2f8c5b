"""Tag-map messages: OPC UA node id syntax, browse-path prefixes, YAML 1.1 booleans, enums, addresses, ranges, names."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from valuegate.adapters.errors import ConfigError
from valuegate.adapters.nodeid import NODE_ID_FORMS, parse_node_id
from valuegate.adapters.tagmap import load_tag_map
from valuegate.adapters.tagmap_checks import tag_map_warnings

UA_MAP = """schema: valuegate/tagmap/v1
name: ua-line
protocol: opcua
namespaces:
  mt: urn:example:machine
tags:
  - {name: mode, node: "nsu=urn:example:machine;s=Machine/Mode", role: state_input}
  - {name: parts, browse_path: ["mt:Machine", "mt:Parts"], role: counter}
  - {name: clock, node: "i=2258", role: clock}
states:
  model: modes
  rules:
    - {when: {mode: [1]}, category: running, label: automatic}
  default: idle
counters:
  - {tag: parts, kind: produced, bits: 32, signed: false, max_rate_per_min: 60}
time: {source: plc, clock: clock}
"""

MB_MAP = """schema: valuegate/tagmap/v1
name: mb-line
protocol: modbus
tags:
  - {name: state, table: holding_register, address: 0, type: uint16, order: ABCD}
  - {name: level, table: holding_register, address: 1, type: float32, order: CDAB}
states:
  model: codes
  rules:
    - {when: {state: [1]}, category: running}
  default: idle
time: {source: gateway}
"""


def problems(tmp_path: Path, text: str) -> list:
    path = tmp_path / "map.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_tag_map(path)
    return caught.value.issues


def test_valid_maps_load(tmp_path: Path) -> None:
    for name, text in (("ua.yaml", UA_MAP), ("mb.yaml", MB_MAP)):
        (tmp_path / name).write_text(text, encoding="utf-8")
        assert load_tag_map(tmp_path / name).name in ("ua-line", "mb-line")


@pytest.mark.parametrize(
    ("node", "reason"),
    [
        ("nsu=urn:x;q=Machine", "not a node id"),
        ("Machine/Mode", "not a node id"),
        ("ns=x;s=Mode", "not a node id"),
        ("ns=2;i=12a", "numeric identifier '12a' is not an integer from 0 to 4294967295"),
        ("i=4294967296", "numeric identifier '4294967296' is not an integer from 0 to 4294967295"),
        ("ns=2;g=nope", "GUID identifier 'nope' is not a GUID such as 72962b91-fa75-4ae6-8d28-b404dc7daf63"),
        ("nsu=urn:x;b=not base64!", "ByteString identifier 'not base64!' is not base64"),
        ("ns=70000;s=Mode", "namespace index 70000 is above 65535"),
    ],
)
def test_invalid_node_id(tmp_path: Path, node: str, reason: str) -> None:
    (issue,) = problems(tmp_path, UA_MAP.replace("nsu=urn:example:machine;s=Machine/Mode", node))
    assert (issue.line, issue.field, issue.value) == (7, "$.tags[0].node", node)
    assert issue.message == f"invalid node id: {reason}"
    assert issue.allowed == NODE_ID_FORMS


@pytest.mark.parametrize(
    ("element", "reason"),
    [
        ("zz:Machine", "prefix 'zz' is not a key of `namespaces` and not a namespace URI"),
        ("2:Machine", "prefix '2' is not a key of `namespaces` and not a namespace URI"),
        ("mt:", "the element has no browse name after its prefix"),
    ],
)
def test_browse_path_prefix(tmp_path: Path, element: str, reason: str) -> None:
    (issue,) = problems(tmp_path, UA_MAP.replace('"mt:Machine"', f'"{element}"'))
    assert (issue.line, issue.field, issue.value) == (8, "$.tags[1].browse_path[0]", element)
    assert issue.message == reason
    assert "prefix from `namespaces` (mt)" in issue.allowed


def test_browse_path_uri_and_bare_names(tmp_path: Path) -> None:
    """A prefix may be a namespace URI itself, and an element without a prefix is in namespace 0."""
    text = UA_MAP.replace('["mt:Machine", "mt:Parts"]', '["Server", "urn:example:machine:Parts"]')
    (tmp_path / "map.yaml").write_text(text, encoding="utf-8")
    assert load_tag_map(tmp_path / "map.yaml").tags[1]["browse_path"] == ["Server", "urn:example:machine:Parts"]


def test_parse_node_id_parts() -> None:
    assert parse_node_id("nsu=urn:x;s=A;B").identifier == "A;B"
    assert (parse_node_id("i=2258").index, parse_node_id("i=2258").identifier) == (0, 2258)
    assert parse_node_id("nsu=urn:x;i=5").index is None
    guid = "72962b91-fa75-4ae6-8d28-b404dc7daf63"
    assert parse_node_id(f"ns=3;g={guid}").identifier == uuid.UUID(guid)
    assert parse_node_id("ns=1;b=AAE=").identifier == b"\x00\x01"
    with pytest.raises(ValueError, match=r"invalid node id 'x': not a node id; use nsu="):
        parse_node_id("x")


def test_yaml_boolean_label_hint(tmp_path: Path) -> None:
    (issue,) = problems(tmp_path, UA_MAP.replace("label: automatic", "label: off"))
    assert (issue.line, issue.field, issue.value) == (13, "$.states.rules[0].label", False)
    assert issue.message == 'Expected `str`, got `bool`: YAML reads off without quotes as a boolean; write it in quotes, "off"'


def test_quoted_boolean_label_passes(tmp_path: Path) -> None:
    (tmp_path / "map.yaml").write_text(UA_MAP.replace("label: automatic", 'label: "off"'), encoding="utf-8")
    assert load_tag_map(tmp_path / "map.yaml").states.rules[0].label == "off"


def test_enum_message_names_value_once(tmp_path: Path) -> None:
    (issue,) = problems(tmp_path, MB_MAP.replace("order: CDAB", "order: ABDC"))
    assert str(issue) == f"{tmp_path / 'map.yaml'}:6: $.tags[1].order: Invalid enum value (got 'ABDC'); allowed: ABCD, BADC, CDAB, DCBA"


def test_address_beyond_modbus_range_is_one_error(tmp_path: Path) -> None:
    (issue,) = problems(tmp_path, MB_MAP.replace("address: 1, type: float32", "address: 70000, type: float32"))
    assert (issue.field, issue.message, issue.allowed, issue.value) == ("$.tags[1].address", "address is outside the Modbus range", "0..65535", 70000)


def test_wide_tag_running_past_last_register(tmp_path: Path) -> None:
    (issue,) = problems(tmp_path, MB_MAP.replace("address: 1, type: float32", "address: 65535, type: float32"))
    assert issue.message == "a float32 tag here takes registers 65535..65536, past the last address 65535"
    assert issue.allowed == "0..65534"


def test_reversed_range_and_duplicate_name(tmp_path: Path) -> None:
    text = MB_MAP.replace("order: CDAB}", "order: CDAB, range: [40, 0]}")
    (issue,) = problems(tmp_path, text)
    assert (issue.field, issue.message, issue.value) == ("$.tags[1].range", "min is greater than max", [40, 0])
    assert issue.allowed == "[min, max] with min <= max, such as [0, 40]"

    (issue,) = problems(tmp_path, MB_MAP.replace("name: level", "name: state"))
    assert (issue.field, issue.message) == ("$.tags[1].name", "duplicate tag name, first used at tags[0]")
    assert issue.allowed == "a name no other tag of this map uses"


@pytest.mark.parametrize(
    ("old", "new", "warned"),
    [
        ("time: {source: plc, clock: clock}", "time: {source: plc}", False),  # the role: clock tag still moves time on
        ('  - {name: clock, node: "i=2258", role: clock}\n', "", True),
        ("time: {source: plc, clock: clock}", "time: {source: gateway}", False),
    ],
)
def test_plc_time_without_clock_warns(tmp_path: Path, old: str, new: str, warned: bool) -> None:
    text = UA_MAP.replace(old, new)
    if old.startswith("  - {name: clock"):
        text = text.replace("time: {source: plc, clock: clock}", "time: {source: plc}")
    path = tmp_path / "map.yaml"
    path.write_text(text, encoding="utf-8")
    load_tag_map(path)
    warnings = tag_map_warnings(path)
    assert len(warnings) == int(warned)
    if warned:
        (warning,) = warnings
        assert (warning.line, warning.field, warning.value) == (16, "$.time", None)
        assert "close only when some tag's value changes" in warning.message
        assert "role clock" in warning.allowed


def test_modbus_plc_time_without_clock_warns(tmp_path: Path) -> None:
    path = tmp_path / "map.yaml"
    path.write_text(MB_MAP.replace("time: {source: gateway}", "time: {source: plc}"), encoding="utf-8")
    (warning,) = tag_map_warnings(path)
    assert "closed by the gateway's clock" in warning.message
    clock = "  - {name: clock, table: holding_register, address: 3, type: uint64, order: CDAB, role: clock}\nstates:"
    text = MB_MAP.replace("states:", clock).replace("time: {source: gateway}", "time: {source: plc, clock: clock}")
    path.write_text(text, encoding="utf-8")
    assert tag_map_warnings(path) == []
