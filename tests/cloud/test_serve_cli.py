"""`valuegate cloud serve` as operators start it: the start-up line names the address where the API responds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from valuegate.services import free_port

pytestmark = pytest.mark.postgres


def test_start_line_names_listen_url(cloud_dsn: str, tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "serve.log"
    environment = {key: value for key, value in os.environ.items() if not key.startswith("VALUEGATE_CLOUD_")}
    command = [sys.executable, "-c", "from valuegate.cli import main; main()", "cloud", "serve", "--dsn", cloud_dsn, "--port", str(port)]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        started: list[dict[str, object]] = []
        while not started and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
            lines = [line for line in log_path.read_text().splitlines() if line.startswith("{")]
            started = [event for event in map(json.loads, lines) if event.get("event") == "api_started"]
        assert started, log_path.read_text()
        url = started[0]["url"]
        assert url == f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{url}/api/v1/health", timeout=10) as response:
            assert response.status == 200
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
