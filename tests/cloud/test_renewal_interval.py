"""The periodic renewal check's interval: a cloud setting, validated like the others, and the deprecated variable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from valuegate.cloud.settings import ConfigError, load_settings
from valuegate.services import free_port


def test_interval_default_and_file(tmp_path: Path) -> None:
    assert load_settings(None, environ={}).renewal_check_interval_s == 3600.0
    path = tmp_path / "cloud.yaml"
    path.write_text("renewal_check_interval_s: 30\n", encoding="utf-8")
    assert load_settings(path, environ={}).renewal_check_interval_s == 30.0
    assert load_settings(path, environ={"VALUEGATE_CLOUD_RENEWAL_CHECK_INTERVAL_S": "0"}).renewal_check_interval_s == 0.0


@pytest.mark.parametrize(
    ("environ", "file_text", "expected"),
    [
        ({}, "renewal_check_interval_s: -5\n", "cloud.yaml: setting renewal_check_interval_s = -5.0 is negative; give the seconds between two renewal checks, or 0 to turn the periodic check off"),
        ({"VALUEGATE_CLOUD_RENEWAL_CHECK_INTERVAL_S": "-1"}, None, "environment variable VALUEGATE_CLOUD_RENEWAL_CHECK_INTERVAL_S: setting renewal_check_interval_s = -1.0 is negative"),
        ({"VALUEGATE_CLOUD_RENEWAL_CHECK_INTERVAL_S": "10m"}, None,
         "environment variable VALUEGATE_CLOUD_RENEWAL_CHECK_INTERVAL_S: setting renewal_check_interval_s is '10m', which is not a number of seconds; "
         "give the seconds between two renewal checks as a number up to 2592000 (30 days), or 0 to turn the periodic check off"),
        ({"VALUEGATE_CLOUD_RENEWAL_CHECK_INTERVAL_S": "abc"}, None, "setting renewal_check_interval_s is 'abc', which is not a number of seconds; give the seconds"),
        ({"VALUEGATE_RENEWAL_CHECK_INTERVAL_S": "10m"}, None, "environment variable VALUEGATE_RENEWAL_CHECK_INTERVAL_S: setting renewal_check_interval_s is '10m'"),
        ({"VALUEGATE_CLOUD_RENEWAL_CHECK_INTERVAL_S": ""}, None, "environment variable VALUEGATE_CLOUD_RENEWAL_CHECK_INTERVAL_S: setting renewal_check_interval_s is empty; give the seconds"),
        # A NaN or infinite interval would make the check loop wait for ever or spin, so both are rejected.
        ({"VALUEGATE_CLOUD_RENEWAL_CHECK_INTERVAL_S": "nan"}, None, "setting renewal_check_interval_s = nan is not a finite number; give the seconds"),
        ({"VALUEGATE_CLOUD_RENEWAL_CHECK_INTERVAL_S": "inf"}, None, "setting renewal_check_interval_s = inf is not a finite number; give the seconds"),
        ({}, "renewal_check_interval_s: .nan\n", "cloud.yaml: setting renewal_check_interval_s = nan is not a finite number; give the seconds"),
        ({}, "renewal_check_interval_s: -.inf\n", "cloud.yaml: setting renewal_check_interval_s = -inf is not a finite number"),
        ({}, "renewal_check_interval_s: []\n", "cloud.yaml: setting renewal_check_interval_s is [], which is not a number of seconds"),
        ({}, "renewal_check_interval_s: 5000000\n", "setting renewal_check_interval_s = 5000000.0 is out of range; allowed 0..2592000"),
    ],
)
def test_interval_invalid_rejected(tmp_path: Path, environ: dict[str, str], file_text: str | None, expected: str) -> None:
    path = None
    if file_text is not None:
        path = tmp_path / "cloud.yaml"
        path.write_text(file_text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ=environ)
    assert expected in str(caught.value)


def test_interval_exponent_text_read() -> None:
    """YAML 1.1 leaves ``1e3`` a string; it is still a number of seconds."""
    assert load_settings(None, environ={"VALUEGATE_CLOUD_RENEWAL_CHECK_INTERVAL_S": "1e3"}).renewal_check_interval_s == 1000.0
    assert load_settings(None, environ={"VALUEGATE_CLOUD_RENEWAL_CHECK_INTERVAL_S": " 90 "}).renewal_check_interval_s == 90.0


def test_legacy_variable_still_read() -> None:
    assert load_settings(None, environ={"VALUEGATE_RENEWAL_CHECK_INTERVAL_S": "20"}).renewal_check_interval_s == 20.0
    both = {"VALUEGATE_RENEWAL_CHECK_INTERVAL_S": "20", "VALUEGATE_CLOUD_RENEWAL_CHECK_INTERVAL_S": "40"}
    assert load_settings(None, environ=both).renewal_check_interval_s == 40.0


def _serve(dsn: str, tmp_path: Path, config: Path, **variables: str) -> tuple[subprocess.Popen[str], Path]:
    log_path = tmp_path / "serve.log"
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("VALUEGATE_CLOUD_", "VALUEGATE_RENEWAL_"))} | variables
    command = [sys.executable, "-c", "from valuegate.cli import main; main()", "cloud", "serve", "-c", str(config), "--dsn", dsn, "--port", str(free_port())]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    return process, log_path


def _events(log_path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


@pytest.mark.postgres
def test_serve_checks_at_interval(cloud_dsn: str, tmp_path: Path) -> None:
    config = tmp_path / "cloud.yaml"
    config.write_text("renewal_check_interval_s: 1\ncookie_secure: false\n", encoding="utf-8")
    process, log_path = _serve(cloud_dsn, tmp_path, config)
    try:
        deadline = time.monotonic() + 60
        done: list[dict[str, object]] = []
        while len(done) < 2 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            done = [event for event in _events(log_path) if event.get("event") == "renewal_check_done"]
        assert len(done) >= 2, log_path.read_text()[-3000:]
        assert not [event for event in _events(log_path) if event.get("event") == "renewal_interval_variable_deprecated"]
    finally:
        _stop(process)


@pytest.mark.postgres
def test_serve_refuses_negative_interval(cloud_dsn: str, tmp_path: Path) -> None:
    config = tmp_path / "cloud.yaml"
    config.write_text("cookie_secure: false\n", encoding="utf-8")
    process, log_path = _serve(cloud_dsn, tmp_path, config, VALUEGATE_CLOUD_RENEWAL_CHECK_INTERVAL_S="-60")
    try:
        assert process.wait(timeout=60) == 2  # the exit status of every invalid setting
    finally:
        _stop(process)
    output = log_path.read_text()
    assert "VALUEGATE_CLOUD_RENEWAL_CHECK_INTERVAL_S: setting renewal_check_interval_s = -60.0 is negative" in output
    assert "api_started" not in output


@pytest.mark.postgres
def test_serve_warns_legacy_variable(cloud_dsn: str, tmp_path: Path) -> None:
    config = tmp_path / "cloud.yaml"
    config.write_text("cookie_secure: false\n", encoding="utf-8")
    process, log_path = _serve(cloud_dsn, tmp_path, config, VALUEGATE_RENEWAL_CHECK_INTERVAL_S="0")
    try:
        deadline = time.monotonic() + 60
        events: list[dict[str, object]] = []
        while not any(event.get("event") == "renewal_check_off" for event in events) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            events = _events(log_path)
    finally:
        _stop(process)
    deprecated = [event for event in events if event.get("event") == "renewal_interval_variable_deprecated"]
    assert len(deprecated) == 1, log_path.read_text()[-3000:]
    assert deprecated[0]["level"] == "warning"
    assert "VALUEGATE_CLOUD_RENEWAL_CHECK_INTERVAL_S" in str(deprecated[0]["detail"])
    assert "the old variable still sets the interval" in str(deprecated[0]["detail"])
    assert any(event.get("event") == "renewal_check_off" for event in events)
