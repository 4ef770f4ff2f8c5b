"""Every independent error of a tag map or device list in one run, and no error that only follows from another."""

from __future__ import annotations

from pathlib import Path

import pytest

from valuegate.adapters.devices import load_devices
from valuegate.adapters.errors import ConfigError
from valuegate.adapters.tagmap import load_tag_map

from .servers import write_tag_map
from .test_tagmap_checks import MAP, NO_REASON_MAP, write


def problems(tmp_path: Path, text: str) -> dict[str, list[str]]:
    """Return the messages of every problem of the map ``text``, keyed by field path."""
    with pytest.raises(ConfigError) as caught:
        load_tag_map(write(tmp_path, text))
    found: dict[str, list[str]] = {}
    for issue in caught.value.issues:
        found.setdefault(issue.field, []).append(issue.message)
    return found


COUNTERS = """counters:
  - {tag: rejected, kind: reject, bits: 16, signed: false, max_rate_per_min: 0}
  - {tag: state, kind: produced, bits: 17, signed: false, max_rate_per_min: 60}
  - {tag: nosuch, kind: produced, bits: 16, signed: false, max_rate_per_min: 60}
"""


def test_map_mistakes_reported_together(tmp_path: Path) -> None:
    """A wrong enum in one rule does not hide a missing field, min > max, an overlap or the counters' problems."""
    text = MAP.replace("{when: {state: [1]}, category: running}", "{when: {state: [1]}, category: runing}")
    text = text.replace("address: 0, type: uint16, order: ABCD}", "address: 0, type: uint16, range: [10, 0]}")
    text = text.replace("name: rejected, table: holding_register, address: 10", "name: rejected, table: holding_register, address: 9")
    text = text.replace("time: {source: gateway}", "time: {source: gateway, clock: nosuch}") + COUNTERS
    found = problems(tmp_path, text)
    assert found.pop("$.states.rules[0].category") == ["Invalid enum value"]
    assert found.pop("$.tags[0].order") == ["`order` is missing; a register tag must name its byte and word order"]
    assert found.pop("$.tags[0].range") == ["min is greater than max"]
    assert found.pop("$.tags[3].address")[0].startswith("tag 'rejected' (holding_register 9..9) overlaps tag 'clock'")
    assert found.pop("$.counters[0].max_rate_per_min") == ["must be positive"]
    assert found.pop("$.counters[1].bits") == ["Invalid enum value"]
    assert found.pop("$.counters[2].tag") == ["unknown tag"]
    assert found.pop("$.time.clock") == ["unknown tag"]
    assert found == {}, "no other problem"


def test_one_tag_reports_each_bad_field(tmp_path: Path) -> None:
    text = MAP.replace("{name: rejected, table: holding_register, address: 10, type: uint16, order: ABCD}",
                       "{name: rejected, table: holding_registers, address: ten, type: uint61, order: ABCD}")
    found = problems(tmp_path, text)
    assert set(found) == {"$.tags[3].table", "$.tags[3].address", "$.tags[3].type"}


def test_bad_rule_leaves_no_reason_alone(tmp_path: Path) -> None:
    """The rule that names the reason tag is invalid, so whether a rule uses the tag is unknown: one error only."""
    text = NO_REASON_MAP.replace("category: unplanned_stop, reason_tag: fault}", "category: breakdown, reason_tag: fault}")
    found = problems(tmp_path, text)
    assert found == {"$.states.rules[3].category": ["Invalid enum value"]}


def test_duplicate_name_has_no_follow_on(tmp_path: Path) -> None:
    """Rules, counters and time naming a duplicated tag find it: the duplicate is the only error."""
    text = MAP.replace("name: rejected, table: holding_register, address: 10", "name: state, table: holding_register, address: 10")
    text = text.replace("time: {source: gateway}", "time: {source: gateway, state_since: state}")
    text += "counters:\n  - {tag: state, kind: produced, bits: 16, signed: false, max_rate_per_min: 60}\n"
    found = problems(tmp_path, text)
    assert found == {"$.tags[3].name": ["duplicate tag name, first used at tags[0]"]}


def test_bad_protocol_still_checks_names(tmp_path: Path) -> None:
    text = MAP.replace("protocol: modbus", "protocol: profinet").replace("when: {state: [4]}", "when: {stat: [4]}")
    found = problems(tmp_path, text)
    assert found == {"$.protocol": ["Invalid enum value"], "$.states.rules[3].when.stat": ["rule reads an unknown tag"]}


def test_counter_rate_message_names_allowed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_tag_map(write(tmp_path, MAP + COUNTERS.split("\n  - {tag: state")[0] + "\n"))
    (issue,) = caught.value.issues
    assert str(issue).endswith("$.counters[0].max_rate_per_min: must be positive (got 0); allowed: a number of counts per minute above 0")


def test_devices_report_every_type_error(tmp_path: Path) -> None:
    """A wrong port type, a missing host and a wrong policy in three devices, and a range error and a map error in two more."""
    write_tag_map(tmp_path, "press", "modbus", [{"name": "state", "table": "holding_register", "address": 0, "type": "uint16", "order": "ABCD"}])
    write_tag_map(tmp_path, "cnc", "opcua", [{"name": "state", "node": "nsu=urn:x;s=State"}])
    write_tag_map(tmp_path, "broken", "modbus", [{"name": "state", "table": "holding_register", "address": 0, "type": "uint16"}])
    path = tmp_path / "edge.yaml"
    path.write_text(
        "devices:\n"
        "  - {id: a, protocol: modbus, host: 127.0.0.1, port: x502, tag_map: press.yaml}\n"
        "  - {id: b, protocol: modbus, tag_map: press.yaml}\n"
        "  - {id: c, protocol: opcua, endpoint: 'opc.tcp://127.0.0.1:4840/', tag_map: cnc.yaml, security: {policy: Basic265, mode: Sign}}\n"
        "  - {id: d, protocol: modbus, host: 127.0.0.1, unit_id: 300, tag_map: press.yaml}\n"
        "  - {id: e, protocol: modbus, host: 127.0.0.1, port: x, tag_map: broken.yaml}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_devices(path)
    found = {(issue.field, issue.line) for issue in caught.value.issues}
    assert found == {
        ("$.devices[0].port", 2),
        ("$.devices[1]", 3),
        ("$.devices[2].security.policy", 4),
        ("$.devices[3].unit_id", 5),
        ("$.devices[4].port", 6),
        ("$.tags[0].order", 5),  # in broken.yaml, still checked although its device has a type error
    }
    missing_host = next(issue for issue in caught.value.issues if issue.field == "$.devices[1]")
    assert missing_host.message == "required field `host` is missing; add it to $.devices[1]"
