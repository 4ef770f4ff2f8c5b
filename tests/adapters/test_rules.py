"""State rules: first match wins, Bad inputs give offline, Uncertain inputs are flagged."""

from __future__ import annotations

from pathlib import Path

import pytest

from valuegate.adapters.rules import StateEvaluator, match_value
from valuegate.adapters.samples import Sample
from valuegate.adapters.tagmap import load_tag_map, shipped_tag_map_dir

DEMO = shipped_tag_map_dir() / "demo"


def sample(tag: str, value, status: str = "good", detail: str = "") -> Sample:
    return Sample("m1", tag, 1_000, "plc", 1_000, value if status != "bad" else None, value, status, detail)


@pytest.fixture
def mazak() -> StateEvaluator:
    return StateEvaluator(load_tag_map(DEMO / "mazak-mtconnect-opcua.yaml"))


def test_offline_before_all_inputs(mazak):
    assert mazak.evaluate().category == "offline"
    mazak.update(sample("execution", "ACTIVE"))
    result = mazak.evaluate()
    assert result.category == "offline"
    assert "mode" in result.label


def test_running_in_automatic(mazak):
    for tag, value in [("execution", "ACTIVE"), ("mode", "AUTOMATIC"), ("alarm_code", 0)]:
        mazak.update(sample(tag, value))
    result = mazak.evaluate()
    assert (result.category, result.code, result.uncertain) == ("running", 0, False)
    assert result.label == "automatic operation"


def test_unless_and_reason_tag(mazak):
    for tag, value in [("execution", "STOPPED"), ("mode", "AUTOMATIC"), ("alarm_code", 2041)]:
        mazak.update(sample(tag, value))
    result = mazak.evaluate()
    assert (result.category, result.code, result.reason) == ("unplanned_stop", 3, "2041")
    mazak.update(sample("alarm_code", 0))
    assert mazak.evaluate().category == "idle"  # the `unless` excludes alarm 0, so the default applies


def test_bad_input_is_offline_never_running(mazak):
    for tag, value in [("execution", "ACTIVE"), ("mode", "AUTOMATIC"), ("alarm_code", 0)]:
        mazak.update(sample(tag, value))
    assert mazak.evaluate().category == "running"
    # Good -> Bad with the same value: the status alone must take the machine offline.
    mazak.update(Sample("m1", "execution", 2_000, "plc", 2_000, None, "ACTIVE", "bad", "BadCommunicationError"))
    result = mazak.evaluate()
    assert (result.category, result.code) == ("offline", 5)
    assert "BadCommunicationError" in result.label
    mazak.update(sample("execution", "ACTIVE"))
    assert mazak.evaluate().category == "running"


def test_uncertain_is_used_and_flagged(mazak):
    for tag, value in [("execution", "ACTIVE"), ("mode", "AUTOMATIC"), ("alarm_code", 0)]:
        mazak.update(sample(tag, value))
    mazak.update(sample("mode", "AUTOMATIC", "uncertain", "UncertainLastUsableValue"))
    result = mazak.evaluate()
    assert result.category == "running"
    assert result.uncertain is True


def test_default_when_no_rule_matches(mazak):
    for tag, value in [("execution", "READY"), ("mode", "AUTOMATIC"), ("alarm_code", 0)]:
        mazak.update(sample(tag, value))
    result = mazak.evaluate()
    assert (result.category, result.code) == ("idle", 1)


def test_first_matching_rule_wins(mazak):
    # UNAVAILABLE execution is offline even though mode AUTOMATIC would match later rules.
    for tag, value in [("execution", "UNAVAILABLE"), ("mode", "AUTOMATIC"), ("alarm_code", 0)]:
        mazak.update(sample(tag, value))
    assert mazak.evaluate().category == "offline"


def test_modbus_codes_and_reason():
    evaluator = StateEvaluator(load_tag_map(DEMO / "bottling-filler-modbus.yaml"))
    evaluator.update(sample("state", 2))
    evaluator.update(sample("reason", 17))
    result = evaluator.evaluate()
    assert (result.category, result.reason) == ("unplanned_stop", "17")
    evaluator.update(sample("state", 9))
    assert evaluator.evaluate().category == "offline"  # the map's default for unknown codes


def test_other_tags_are_ignored(mazak):
    mazak.update(sample("part_count", 10))
    assert mazak.evaluate().label.startswith("no value yet")


@pytest.mark.parametrize(
    ("actual", "allowed", "expected"),
    [(1, [1], True), (1.0, [1], True), (True, [1], True), ("1", [1], False), (1, ["1"], False), ("A", ["A", "B"], True), (None, [0], False)],
)
def test_match_value(actual, allowed, expected):
    assert match_value(actual, allowed) is expected


def test_evaluator_keeps_latest(tmp_path: Path):
    evaluator = StateEvaluator(load_tag_map(DEMO / "bottling-filler-modbus.yaml"))
    evaluator.update(sample("state", 1))
    evaluator.update(sample("state", 0))
    assert evaluator.evaluate().category == "planned_stop"


def test_no_reason_value_leaves_stop_unassigned():
    bottling = StateEvaluator(load_tag_map(DEMO / "bottling-filler-modbus.yaml"))
    bottling.update(sample("state", 2))
    bottling.update(sample("reason", 0))
    result = bottling.evaluate()
    assert (result.category, result.reason) == ("unplanned_stop", None)
    bottling.update(sample("reason", 17))
    assert bottling.evaluate().reason == "17"


def test_no_reason_falls_back_to_fixed_reason(tmp_path: Path):
    text = (DEMO / "bottling-filler-modbus.yaml").read_text(encoding="utf-8")
    text = text.replace("reason_tag: reason, label:", "reason_tag: reason, reason: JAM, label:")
    path = tmp_path / "fixed.yaml"
    path.write_text(text, encoding="utf-8")
    evaluator = StateEvaluator(load_tag_map(path))
    for tag, value in [("state", 2), ("reason", 0)]:
        evaluator.update(sample(tag, value))
    assert evaluator.evaluate().reason == "JAM"
    evaluator.update(sample("reason", 3))
    assert evaluator.evaluate().reason == "3"
