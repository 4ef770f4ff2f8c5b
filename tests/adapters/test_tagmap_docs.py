"""The minimal tag maps in docs/tag-maps.md and its Chinese version pass `valuegate edge check-config` without warnings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from valuegate.cli import app

DOCS = Path(__file__).resolve().parents[2] / "docs"
runner = CliRunner()


def doc_maps(name: str) -> list[str]:
    """Return the YAML blocks of a doc that are whole tag maps."""
    text = (DOCS / name).read_text(encoding="utf-8")
    return re.findall(r"```yaml\n(schema: valuegate/tagmap/v1\n.*?)```", text, re.DOTALL)


def test_docs_show_same_maps() -> None:
    english = doc_maps("tag-maps.md")
    assert len(english) == 2
    assert doc_maps("tag-maps.zh-CN.md") == english


@pytest.mark.parametrize("doc", ["tag-maps.md", "tag-maps.zh-CN.md"])
def test_minimal_maps_pass_check_config(tmp_path: Path, doc: str) -> None:
    modbus_map, opcua_map = doc_maps(doc)
    (tmp_path / "press.yaml").write_text(modbus_map, encoding="utf-8")
    (tmp_path / "cell.yaml").write_text(opcua_map, encoding="utf-8")
    config = {
        "schema": "valuegate/edge/v1", "gateway": "gw-1", "tenant": "acme", "site": "suzhou", "time_zone": "Asia/Shanghai",
        "state_dir": str(tmp_path / "state"), "mqtt": {"host": "127.0.0.1"},
        "devices": [
            {"id": "press-1", "protocol": "modbus", "host": "127.0.0.1", "tag_map": "press.yaml"},
            {"id": "cell-1", "protocol": "opcua", "endpoint": "opc.tcp://127.0.0.1:4840/", "tag_map": "cell.yaml"},
        ],
    }  # fmt: skip
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    result = runner.invoke(app, ["edge", "check-config", str(path)])
    assert result.exit_code == 0, result.output
    assert "WARNING" not in result.output
    assert result.output.rstrip().endswith(f"{path}: OK")
    assert yaml.safe_load(modbus_map)["protocol"] == "modbus"
    assert yaml.safe_load(opcua_map)["protocol"] == "opcua"
