"""Tag-map checks across fields: rule values that can never match their tag, overlapping registers, missing fields."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from valuegate.adapters.errors import ConfigError
from valuegate.adapters.tagmap import load_tag_map
from valuegate.cli import app

runner = CliRunner()

MAP = """schema: valuegate/tagmap/v1
name: checks
protocol: modbus
tags:
  - {name: state, table: holding_register, address: 0, type: uint16, order: ABCD}
  - {name: since, table: holding_register, address: 2, type: uint64, order: CDAB}
  - {name: clock, table: holding_register, address: 6, type: uint64, order: CDAB}
  - {name: rejected, table: holding_register, address: 10, type: uint16, order: ABCD}
  - {name: ready, table: holding_register, address: 11, type: bool, order: ABCD, bit: 0}
  - {name: jammed, table: holding_register, address: 11, type: bool, order: ABCD, bit: 1}
  - {name: status_word, table: holding_register, address: 11, type: uint16, order: ABCD}
  - {name: recipe, table: holding_register, address: 12, type: string, length: 4, order: ABCD}
  - {name: door, table: coil, address: 0, type: bool}
  - {name: door_sensor, table: discrete_input, address: 0, type: bool}
states:
  model: codes
  rules:
    - {when: {state: [1]}, category: running}
    - {when: {state: [2], ready: [true]}, category: idle}
    - {when: {recipe: ["CLEAN"]}, category: changeover}
    - {when: {state: [4]}, category: unplanned_stop}
  default: offline
time: {source: gateway}
"""


def write(tmp_path: Path, text: str, name: str = "map.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str) -> list:
    with pytest.raises(ConfigError) as caught:
        load_tag_map(write(tmp_path, text))
    return caught.value.issues


def test_map_is_valid(tmp_path: Path) -> None:
    """Bit tags share register 11 with each other and with the whole-register tag; a coil and a discrete input share address 0."""
    assert len(load_tag_map(write(tmp_path, MAP)).tags) == 10


def test_text_rule_value_on_number_tag(tmp_path: Path) -> None:
    (issue,) = problems(tmp_path, MAP.replace("when: {state: [4]}", 'when: {state: ["4"]}'))
    assert (issue.line, issue.field, issue.value) == (21, "$.states.rules[3].when.state[0]", "4")
    assert str(issue) == (
        f"{tmp_path / 'map.yaml'}:21: $.states.rules[3].when.state[0]: "
        "text never matches tag 'state', which is uint16; write 4 without quotes (got '4')"
    )


@pytest.mark.parametrize(
    ("old", "new", "field", "message"),
    [
        ("state: [1]", "state: [RUN]", "$.states.rules[0].when.state[0]",
         "text never matches tag 'state', which is uint16; write the number the PLC sends"),
        ("state: [1]", "state: [1.5]", "$.states.rules[0].when.state[0]",
         "tag 'state' is uint16 and reads whole numbers only; write the integer the PLC sends"),
        ("ready: [true]", "ready: [2]", "$.states.rules[1].when.ready[0]",
         "tag 'ready' is bool and reads only 0 or 1 (false or true)"),
        ('recipe: ["CLEAN"]', "recipe: [7]", "$.states.rules[2].when.recipe[0]",
         "a number never matches tag 'recipe', which is a string; write '7' in quotes"),
    ],
)  # fmt: skip
def test_rule_value_that_cannot_match(tmp_path: Path, old: str, new: str, field: str, message: str) -> None:
    (issue,) = problems(tmp_path, MAP.replace(old, new))
    assert (issue.field, issue.message) == (field, message)


def test_rule_values_that_can_match(tmp_path: Path) -> None:
    """Whole floats on integer tags, 0/1 on bool tags, any number on a scaled tag: all can equal a decoded value."""
    text = MAP.replace("state: [1]", "state: [1.0]").replace("ready: [true]", "ready: [1, false]")
    text = text.replace("address: 10, type: uint16, order: ABCD}", "address: 10, type: uint16, order: ABCD, scale: 0.5}")
    text = text.replace("when: {state: [4]}", "when: {state: [4], rejected: [2.5]}")
    assert load_tag_map(write(tmp_path, text)).states.rules[0].when == {"state": [1.0]}


def test_multiword_overlap_names_both_tags(tmp_path: Path) -> None:
    (issue,) = problems(tmp_path, MAP.replace("name: rejected, table: holding_register, address: 10", "name: rejected, table: holding_register, address: 9"))
    assert (issue.line, issue.field) == (8, "$.tags[3].address")
    assert issue.message == "tag 'rejected' (holding_register 9..9) overlaps tag 'clock' of tags[2] (6..9); give each tag its own registers"


def test_overlaps_in_every_table(tmp_path: Path) -> None:
    text = MAP.replace("address: 2, type: uint64", "address: 3, type: uint64")  # since 3..6 meets clock 6..9
    text = text.replace("name: jammed, table: holding_register, address: 11, type: bool, order: ABCD, bit: 1",
                        "name: jammed, table: holding_register, address: 11, type: bool, order: ABCD, bit: 0")
    text = text.replace("address: 12, type: string, length: 4", "address: 8, type: string, length: 4")  # recipe 8..11
    text = text.replace("name: door_sensor, table: discrete_input", "name: door_sensor, table: coil")
    found = sorted(issue.message for issue in problems(tmp_path, text))
    assert found == sorted([
        "tag 'clock' (holding_register 6..9) overlaps tag 'since' of tags[1] (3..6); give each tag its own registers",
        "tag 'recipe' (holding_register 8..11) overlaps tag 'clock' of tags[2] (6..9); give each tag its own registers",
        "tag 'rejected' (holding_register 10..10) overlaps tag 'recipe' of tags[7] (8..11); give each tag its own registers",
        "tag 'status_word' (holding_register 11..11) overlaps tag 'recipe' of tags[7] (8..11); give each tag its own registers",
        "tag 'jammed' reads bit 0 of holding_register 11, as tag 'ready' of tags[4] does; give each tag its own bit",
        "tag 'door_sensor' (coil 0..0) overlaps tag 'door' of tags[8] (0..0); give each tag its own registers",
    ])  # fmt: skip


def test_missing_field_names_it_without_the_document(tmp_path: Path) -> None:
    text = MAP[: MAP.index("states:")] + "time: {source: gateway}\n"
    (issue,) = problems(tmp_path, text)
    assert str(issue) == f"{tmp_path / 'map.yaml'}:1: $: required field `states` is missing; add it to the file"
    (issue,) = problems(tmp_path, MAP.replace("  model: codes\n", ""))
    assert str(issue) == f"{tmp_path / 'map.yaml'}:16: $.states: required field `model` is missing; add it to $.states"


def edge_config(tmp_path: Path, tag_map: Path, **changes: object) -> Path:
    data = {
        "schema": "valuegate/edge/v1", "gateway": "gw-1", "tenant": "acme", "site": "suzhou", "time_zone": "UTC",
        "state_dir": str(tmp_path / "state"),
        "devices": [{"protocol": "modbus", "id": "filler", "host": "127.0.0.1", "port": 5020, "tag_map": str(tag_map)}],
        "machines": [{"device": "filler", "id": "filler-1"}],
        "mqtt": {"host": "127.0.0.1", "port": 1883},
        **changes,
    }  # fmt: skip
    return write(tmp_path, yaml.safe_dump(data, sort_keys=False), "edge.yaml")


def test_check_config_rejects_map_mistakes(tmp_path: Path) -> None:
    text = MAP.replace("when: {state: [4]}", 'when: {state: ["4"]}').replace("address: 10, type: uint16", "address: 9, type: uint16")
    tag_map = write(tmp_path, text)
    result = runner.invoke(app, ["edge", "check-config", str(edge_config(tmp_path, tag_map))])
    assert result.exit_code == 1, result.output
    assert f"{tag_map}:21: $.states.rules[3].when.state[0]: text never matches tag 'state', which is uint16; write 4 without quotes" in result.output
    assert f"{tag_map}:8: $.tags[3].address: tag 'rejected' (holding_register 9..9) overlaps tag 'clock'" in result.output

    good = write(tmp_path, MAP, "good.yaml")
    assert runner.invoke(app, ["edge", "check-config", str(edge_config(tmp_path, good))]).exit_code == 0


def test_check_config_missing_mqtt_is_one_short_line(tmp_path: Path) -> None:
    path = edge_config(tmp_path, write(tmp_path, MAP), mqtt=None)
    path.write_text("\n".join(line for line in path.read_text().splitlines() if not line.startswith("mqtt")) + "\n", encoding="utf-8")
    result = runner.invoke(app, ["edge", "check-config", str(path)])
    assert result.exit_code == 1
    assert f"{path}:1: $: required field `mqtt` is missing; add it to the file" in result.output
    assert "gw-1" not in result.output
    assert "suzhou" not in result.output


def test_oee_rejects_text_rule(tmp_path: Path) -> None:
    tag_map = write(tmp_path, MAP.replace("when: {state: [4]}", 'when: {state: ["4"]}'))
    trace = write(tmp_path, "timestamp,tag,value\n2024-03-04T08:00:00Z,state,1\n2024-03-04T09:00:00Z,state,4\n", "trace.csv")
    result = runner.invoke(app, ["oee", str(trace), "--map", str(tag_map)])
    assert result.exit_code != 0
    assert "$.states.rules[3].when.state[0]: text never matches tag 'state', which is uint16; write 4 without quotes" in result.output


NO_REASON_MAP = MAP.replace(
    "  - {name: door, table: coil",
    "  - {name: fault, table: holding_register, address: 20, type: uint16, order: ABCD, role: reason, no_reason: [0]}\n  - {name: door, table: coil",
).replace("{when: {state: [4]}, category: unplanned_stop}", "{when: {state: [4]}, category: unplanned_stop, reason_tag: fault}")


def test_no_reason_on_reason_tag_is_valid(tmp_path: Path) -> None:
    tag_map = load_tag_map(write(tmp_path, NO_REASON_MAP))
    assert [tag["no_reason"] for tag in tag_map.tags if "no_reason" in tag] == [[0]]


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("no_reason: [0]", 'no_reason: ["0"]', "text never matches tag 'fault', which is uint16; write 0 without quotes"),
        ("no_reason: [0]", "no_reason: []", "list at least one value that means no reason, or remove no_reason"),
        ("unplanned_stop, reason_tag: fault}", "unplanned_stop}",
         "no rule names tag 'fault' in reason_tag, so no_reason has no effect; name it in a rule's reason_tag or remove no_reason"),
    ],
)  # fmt: skip
def test_no_reason_mistakes(tmp_path: Path, old: str, new: str, message: str) -> None:
    (issue,) = problems(tmp_path, NO_REASON_MAP.replace(old, new))
    assert issue.field.startswith("$.tags[8].no_reason")
    assert issue.message == message
