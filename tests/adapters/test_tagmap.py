"""Tag maps: the shipped maps and their standard state codes, the content hash, and errors that point at the line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from valuegate.adapters.errors import ConfigError
from valuegate.adapters.rules import StateEvaluator
from valuegate.adapters.samples import Sample
from valuegate.adapters.tagmap import load_tag_map, shipped_tag_map_dir

SHIPPED = sorted(shipped_tag_map_dir().rglob("*.yaml"))
STANDARD_MAPS = [path for path in SHIPPED if path.parent.name != "demo"]
FIVE = {"running", "idle", "planned_stop", "unplanned_stop", "changeover"}


def categories_for(path: Path, cases: list[dict]) -> list[str]:
    tag_map = load_tag_map(path)
    results = []
    for values in cases:
        evaluator = StateEvaluator(tag_map)
        for tag in evaluator.inputs:
            evaluator.update(Sample("m", tag, 0, "plc", 0, values.get(tag, 0), values.get(tag, 0), "good"))
        results.append(evaluator.evaluate().category)
    return results


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_map_loads(path: Path):
    tag_map = load_tag_map(path)
    assert tag_map.content_hash().startswith("sha256:")
    assert len(tag_map.content_hash()) == len("sha256:") + 64


def test_shipped_names_unique():
    names = [load_tag_map(path).name for path in SHIPPED]
    assert len(names) == len(set(names))
    assert len(STANDARD_MAPS) == 7


@pytest.mark.parametrize("path", STANDARD_MAPS, ids=lambda p: p.name)
def test_map_names_all_five_categories(path: Path):
    tag_map = load_tag_map(path)
    used = {rule.category for rule in tag_map.states.rules} | {tag_map.states.default}
    assert FIVE <= used
    kinds = {counter.kind for counter in tag_map.counters}
    assert "reject" in kinds
    assert kinds & {"good", "produced"}
    assert tag_map.ideal_cycle_time_s and tag_map.ideal_cycle_time_s > 0


def test_packml_state_numbers():
    path = shipped_tag_map_dir() / "packml" / "packml-packtags-opcua.yaml"
    # ISA-TR88.00.02 PackTags StateCurrent numbers in Production mode (1).
    expected = {0: "offline", 1: "unplanned_stop", 2: "planned_stop", 3: "running", 4: "idle", 5: "idle", 6: "running",
                7: "planned_stop", 8: "unplanned_stop", 9: "unplanned_stop", 10: "unplanned_stop", 11: "unplanned_stop",
                12: "unplanned_stop", 13: "idle", 14: "idle", 15: "planned_stop", 16: "planned_stop", 17: "planned_stop"}
    cases = [{"state": state, "mode": 1} for state in expected]
    assert categories_for(path, cases) == list(expected.values())
    assert categories_for(path, [{"state": 6, "mode": 2}, {"state": 6, "mode": 3}, {"state": 4, "mode": 4}]) == [
        "planned_stop", "planned_stop", "changeover"]


def test_siemens_map_agrees_with_packml():
    packml = shipped_tag_map_dir() / "packml" / "packml-packtags-opcua.yaml"
    siemens = shipped_tag_map_dir() / "siemens" / "s7-1500-opcua.yaml"
    cases = [{"state": state, "mode": mode} for state in range(1, 18) for mode in (1, 2, 3, 4)]
    assert categories_for(siemens, cases) == categories_for(packml, cases)


def test_machinery_item_state_numbers():
    path = shipped_tag_map_dir() / "machinery" / "machinery-item-state-opcua.yaml"
    # (MachineryItemState, MachineryOperationMode) state numbers from the Machinery NodeSet.
    cases = {(3, 3): "running", (3, 0): "running", (2, 3): "idle", (1, 3): "unplanned_stop", (0, 3): "offline",
             (3, 2): "changeover", (2, 2): "changeover", (1, 1): "planned_stop", (2, 1): "planned_stop"}
    values = [{"item_state": item, "operation_mode": mode} for item, mode in cases]
    assert categories_for(path, values) == list(cases.values())


def test_mtconnect_execution_values():
    path = shipped_tag_map_dir() / "mtconnect" / "mtconnect-execution-opcua.yaml"
    cases = [
        ({"execution": "ACTIVE", "mode": "AUTOMATIC", "alarm_code": 0}, "running"),
        ({"execution": "READY", "mode": "AUTOMATIC", "alarm_code": 0}, "idle"),
        ({"execution": "FEED_HOLD", "mode": "AUTOMATIC", "alarm_code": 0}, "unplanned_stop"),
        ({"execution": "STOPPED", "mode": "AUTOMATIC", "alarm_code": 1003}, "unplanned_stop"),
        ({"execution": "STOPPED", "mode": "AUTOMATIC", "alarm_code": 0}, "planned_stop"),
        ({"execution": "ACTIVE", "mode": "MANUAL_DATA_INPUT", "alarm_code": 0}, "changeover"),
        ({"execution": "UNAVAILABLE", "mode": "AUTOMATIC", "alarm_code": 0}, "offline"),
    ]
    assert categories_for(path, [values for values, _ in cases]) == [category for _, category in cases]


def test_content_hash_ignores_layout(tmp_path: Path):
    original = shipped_tag_map_dir() / "generic" / "filler-modbus.yaml"
    data = yaml.safe_load(original.read_text(encoding="utf-8"))
    relaid = tmp_path / "relaid.yaml"
    relaid.write_text(yaml.safe_dump(dict(reversed(list(data.items()))), default_flow_style=False), encoding="utf-8")
    assert load_tag_map(relaid).content_hash() == load_tag_map(original).content_hash()
    data["states"]["rules"][1]["category"] = "unplanned_stop"
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert load_tag_map(changed).content_hash() != load_tag_map(original).content_hash()


BASE = """schema: valuegate/tagmap/v1
name: t
protocol: modbus
tags:
  - {name: state, table: holding_register, address: 0, type: uint16, order: ABCD}
  - {name: flag, table: holding_register, address: 1, type: bool, order: ABCD, bit: 3}
states:
  model: m
  rules:
    - {when: {state: [1]}, category: running}
  default: offline
time: {source: gateway}
"""


def issues(tmp_path: Path, text: str) -> list:
    path = tmp_path / "map.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_tag_map(path)
    return caught.value.issues


def test_base_is_valid(tmp_path: Path):
    path = tmp_path / "map.yaml"
    path.write_text(BASE, encoding="utf-8")
    assert load_tag_map(path).tag_names() == ["state", "flag"]


def test_enum_error_lists_allowed(tmp_path: Path):
    (issue,) = issues(tmp_path, BASE.replace("order: ABCD}", "order: ABDC}", 1))
    assert (issue.line, issue.field, issue.value) == (5, "$.tags[0].order", "ABDC")
    assert issue.allowed == "ABCD, BADC, CDAB, DCBA"
    assert str(issue).startswith(f"{tmp_path / 'map.yaml'}:5: $.tags[0].order")


def test_type_and_category_errors(tmp_path: Path):
    (issue,) = issues(tmp_path, BASE.replace("type: uint16", "type: uint17"))
    assert issue.value == "uint17"
    assert "float32" in issue.allowed
    assert "int64" in issue.allowed
    (issue,) = issues(tmp_path, BASE.replace("category: running", "category: producing"))
    assert (issue.line, issue.value) == (10, "producing")
    assert issue.allowed == "changeover, idle, offline, planned_stop, running, unplanned_stop"


def test_unknown_field_lists_fields(tmp_path: Path):
    (issue,) = issues(tmp_path, BASE.replace("order: ABCD}", "order: ABCD, scaling: 2}", 1))
    assert issue.field == "$.tags[0].scaling"
    assert "scale" in issue.allowed
    assert "offset" in issue.allowed


def test_modbus_rules(tmp_path: Path):
    text = BASE.replace("type: uint16, order: ABCD", "type: uint16").replace("bit: 3", "bit: 16")
    found = {(i.field, i.message) for i in issues(tmp_path, text)}
    assert ("$.tags[0].order", "`order` is missing; a register tag must name its byte and word order") in found
    assert ("$.tags[1].bit", "a bool in a register needs the bit number") in found


def test_rule_naming_unknown_tag(tmp_path: Path):
    (issue,) = issues(tmp_path, BASE.replace("when: {state: [1]}", "when: {stat: [1]}"))
    assert issue.field == "$.states.rules[0].when.stat"
    assert issue.allowed == "state, flag"


def test_every_problem_reported(tmp_path: Path):
    text = BASE.replace("address: 0", "address: 70000").replace("name: flag", "name: state")
    found = [i.field for i in issues(tmp_path, text)]
    assert "$.tags[0].address" in found
    assert "$.tags[1].name" in found


def test_yaml_syntax_error_line(tmp_path: Path):
    (issue,) = issues(tmp_path, BASE.replace("states:\n", "states:\n  - [\n"))
    assert issue.line is not None and issue.line >= 8
    assert "invalid YAML" in issue.message


def test_duplicate_key_names_both_lines(tmp_path: Path):
    (issue,) = issues(tmp_path, BASE.replace("name: t\n", "name: t\nname: u\n"))
    assert str(issue) == f"{tmp_path / 'map.yaml'}:3: $: duplicate key 'name' (first on line 2); write each key once"


def test_duplicate_key_inside_a_tag(tmp_path: Path):
    (issue,) = issues(tmp_path, BASE.replace("address: 0, type: uint16", "address: 0, type: uint16, address: 4"))
    assert issue.line == 5
    assert issue.message == "duplicate key 'address' (first on line 5); write each key once"


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        (BASE.replace("protocol: modbus", "protocol:\tmodbus").replace("name: t", "name:\tt\n\tx: 1"), 3, 1),
        (BASE.replace("  - {name: flag", "\t- {name: flag"), 6, 1),
    ],
    ids=["tab-indent", "tab-list-item"],
)
def test_tab_named_with_its_place(tmp_path: Path, text: str, line: int, column: int):
    (issue,) = issues(tmp_path, text)
    assert issue.line == line
    assert issue.message == f"invalid YAML: a tab character at column {column}; indent YAML with spaces only"


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16"])
def test_file_not_utf8_named(tmp_path: Path, encoding: str):
    path = tmp_path / "map.yaml"
    path.write_bytes(BASE.replace("name: t", "name: f\u00fcr").encode(encoding))
    with pytest.raises(ConfigError) as caught:
        load_tag_map(path)
    (issue,) = caught.value.issues
    assert issue.file == str(path)
    assert issue.message.startswith("the file is not UTF-8 text (byte 0x")
    assert issue.message.endswith("cannot be decoded); save it as UTF-8")
