"""The shipped systemd unit passes ``systemd-analyze verify``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "edge" / "systemd" / "valuegate-edge.service"
INSTALLED_COMMAND = "/opt/valuegate/bin/valuegate"


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed; install systemd to verify edge/systemd/valuegate-edge.service")
    text = UNIT.read_text(encoding="utf-8")
    assert INSTALLED_COMMAND in text
    # verify checks that ExecStart's program exists; here it is the test environment's valuegate instead of the installed one.
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(INSTALLED_COMMAND, str(Path(sys.executable).parent / "valuegate")), encoding="utf-8")

    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode == 0, result.stderr
    # Unknown keys and bad values are only warnings with exit status 0, so any output fails the test.
    assert result.stderr == ""
    assert result.stdout == ""
