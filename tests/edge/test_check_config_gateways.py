"""A contract whose anchors lie on several gateways: check-config accepts exactly the anchors the agent measures or skips."""

from __future__ import annotations

from pathlib import Path

import structlog
import yaml
from typer.testing import CliRunner

from valuegate.adapters.tagmap import load_tag_map
from valuegate.cli import app
from valuegate.edge.config import load_config
from valuegate.edge.minutes import MachineInfo
from valuegate.edge.pipeline import Pipeline
from valuegate.edge.protocol.contract import load_contract

from .helpers import write_config

FILLER_MAP = "demo/bottling-filler-modbus.yaml"
runner = CliRunner()


def anchor(anchor_id: str, scope: list[str]) -> dict:
    return {
        "id": anchor_id,
        "scope": scope,
        "metric": "availability_points",
        "baseline": {"first_date": "2026-01-01", "last_date": "2026-01-10", "min_days": 5},
        "reporting": {"first_date": "2026-01-11", "last_date": "2026-12-31"},
    }


def gateway_with_contract(folder: Path, anchors: list[dict]) -> Path:
    """Write an edge.yaml for a gateway with the one machine filler-1 and a contract with ``anchors``."""
    contract = {
        "schema": "valuegate/contract/v1",
        "id": "plant-wide",
        "tenant": "acme",
        "customer": "Acme",
        "start": "2026-01-01",
        "end": "2026-12-31",
        "anchors": anchors,
    }
    (folder / "contract.yaml").write_text(yaml.safe_dump(contract, sort_keys=False), encoding="utf-8")
    devices = [{"protocol": "modbus", "id": "filler", "host": "127.0.0.1", "port": 5020, "tag_map": FILLER_MAP}]
    return write_config(folder, 1883, devices=devices, machines=[{"device": "filler", "id": "filler-1"}], contracts=["contract.yaml"])


def measured_anchors(path: Path) -> list[str]:
    """Return the anchor ids that the agent's pipeline measures for the configuration at ``path``, built as the agent builds it."""
    config = load_config(path)
    infos = [MachineInfo(machine.id, load_tag_map(machine.device.tag_map), machine.time_zone) for machine in config.machine_list()]
    contracts = [load_contract(config.resolve(name)) for name in config.contracts]
    return [plan.anchor.id for plan in Pipeline(infos, contracts, None).plans]


def test_anchor_on_other_gateway_is_note(tmp_path: Path) -> None:
    path = gateway_with_contract(tmp_path, [anchor("line-1", ["filler-1"]), anchor("line-2", ["capper-9", "labeler-2"])])
    result = runner.invoke(app, ["edge", "check-config", str(path)])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output
    note = next(line for line in result.output.splitlines() if line.startswith("note:") and "line-2" in line)
    assert "contract plant-wide, anchor line-2" in note
    assert "capper-9, labeler-2" in note
    assert "another gateway must measure it" in note
    assert "anchor line-1" not in result.output
    with structlog.testing.capture_logs() as logged:
        assert measured_anchors(path) == ["line-1"]
    skipped = [entry for entry in logged if entry["event"] == "anchor_not_measured"]
    assert [(entry["anchor"], entry["log_level"], entry["machines_here"]) for entry in skipped] == [("line-2", "info", [])]
    assert skipped[0]["reason"] == "another gateway measures it"


def test_anchor_partly_here_is_problem(tmp_path: Path) -> None:
    path = gateway_with_contract(tmp_path, [anchor("line-1", ["filler-1"]), anchor("split", ["filler-1", "capper-9"])])
    result = runner.invoke(app, ["edge", "check-config", str(path)])
    assert result.exit_code == 1
    assert "$.anchors[1].scope: no device of this gateway measures these machines of the scope (got 'capper-9'); allowed: filler-1" in result.output
    assert "so the agent would skip it" in result.output
    assert "move those machines to one gateway, or split the anchor into one anchor per gateway" in result.output
    assert "1 problem(s) found" in result.output
    # The agent skips that anchor, which is why check-config stops the service for it, and warns at start.
    with structlog.testing.capture_logs() as logged:
        assert measured_anchors(path) == ["line-1"]
    skipped = [entry for entry in logged if entry["event"] == "anchor_not_measured"]
    assert [(entry["anchor"], entry["log_level"], entry["machines_here"]) for entry in skipped] == [("split", "warning", ["filler-1"])]
    assert "no gateway issues vouchers" in skipped[0]["reason"]


def test_no_anchor_here_passes(tmp_path: Path) -> None:
    path = gateway_with_contract(tmp_path, [anchor("line-2", ["capper-9"]), anchor("line-3", ["labeler-2"])])
    result = runner.invoke(app, ["edge", "check-config", str(path)])
    assert result.exit_code == 0, result.output
    assert sum(line.startswith("note:") and "another gateway must measure it" in line for line in result.output.splitlines()) == 2
    assert measured_anchors(path) == []
