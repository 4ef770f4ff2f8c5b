"""The agent as the ``valuegate edge run`` process: its last will after SIGKILL, and logs without the MQTT password or the key."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives import serialization

from valuegate.edge import keys
from valuegate.services import MosquittoServer

from .conftest import MQTT_PASSWORD
from .helpers import GATEWAY, SITE, TENANT, write_config

pytestmark = pytest.mark.mosquitto

STATUS_TOPIC = f"valuegate/v1/{TENANT}/{SITE}/{GATEWAY}/status"
PASSWORD_ENV = "VG_TEST_MQTT_PASSWORD"
# The publisher's MQTT will delay (edge/publish.py), plus time for the broker to notice the closed socket.
WILL_WAIT_S = 5 + 10


class StatusWatch:
    """Subscribes to the gateway's status topic and keeps every message with its retain flag."""

    def __init__(self, port: int, *, username: str | None = None) -> None:
        self.messages: list[tuple[dict[str, Any], bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        if username is not None:
            self.client.username_pw_set(username, MQTT_PASSWORD)
        self.client.on_connect = lambda client, *_: client.subscribe(STATUS_TOPIC, 1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((json.loads(message.payload), bool(message.retain)))

    def wait_for(self, state: str, *, instance: str | None = None, timeout_s: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                for status, _retained in self.messages:
                    if status.get("state") == state and instance in (None, status.get("instance")):
                        return status
            time.sleep(0.05)
        return None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def start_agent(config: Path, log: Path, cache: Path, **env: str) -> subprocess.Popen[bytes]:
    env = {**env, "NUMBA_CACHE_DIR": str(cache)}
    command = [str(Path(sys.executable).parent / "valuegate"), "edge", "run", "--config", str(config), "--log-level", "debug"]
    with open(log, "ab") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True)


def stop(agent: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    if agent.poll() is None:
        os.kill(agent.pid, sig)
    return agent.wait(20)


def test_killed_agent_leaves_offline_will(tmp_path: Path, mosquitto: MosquittoServer, numba_cache: Path) -> None:
    config = write_config(tmp_path, mosquitto.port)
    keys.create_key(tmp_path / "state" / "keys")
    watch = StatusWatch(mosquitto.port)
    agent = start_agent(config, tmp_path / "agent.log", numba_cache)
    try:
        online = watch.wait_for("online", timeout_s=30)
        assert online is not None, (tmp_path / "agent.log").read_text()[-2000:]
        assert stop(agent, signal.SIGKILL) == -signal.SIGKILL

        offline = watch.wait_for("offline", instance=online["instance"], timeout_s=WILL_WAIT_S)
        assert offline is not None
    finally:
        stop(agent, signal.SIGKILL)
        watch.close()

    # A subscriber that comes later gets the offline status as the retained message.
    late = StatusWatch(mosquitto.port)
    try:
        retained = late.wait_for("offline", timeout_s=5)
        assert retained is not None
        assert retained["instance"] == online["instance"]
        assert late.messages[0][1] is True
        assert len(late.messages) == 1
    finally:
        late.close()


def key_material(key_dir: Path) -> list[str]:
    """Return the private key's PEM body and its raw bytes in hex, base64 and base64url."""
    pem = (key_dir / "gateway.key").read_bytes()
    private = serialization.load_pem_private_key(pem, password=None)
    raw = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    body = "".join(line for line in pem.decode().splitlines() if not line.startswith("-----"))
    return [body, raw.hex(), base64.b64encode(raw).decode().rstrip("="), base64.urlsafe_b64encode(raw).decode().rstrip("=")]


def test_logs_hold_no_secrets(tmp_path: Path, password_broker: MosquittoServer, numba_cache: Path) -> None:
    """A rejected password and then the right one, logged at debug level: neither password nor the private key appears."""
    config = write_config(tmp_path, password_broker.port, mqtt={"username": GATEWAY, "password_env": PASSWORD_ENV})
    keys.create_key(tmp_path / "state" / "keys")
    log = tmp_path / "agent.log"
    wrong_password = "wr0ng-pw-7d41"

    agent = start_agent(config, log, numba_cache, **{PASSWORD_ENV: wrong_password})
    try:
        deadline = time.monotonic() + 30
        while '"mqtt_connect_failed"' not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert '"mqtt_connect_failed"' in log.read_text()
    finally:
        assert stop(agent) == 0

    watch = StatusWatch(password_broker.port, username=GATEWAY)
    agent = start_agent(config, log, numba_cache, **{PASSWORD_ENV: MQTT_PASSWORD})
    try:
        assert watch.wait_for("online", timeout_s=30) is not None, log.read_text()[-2000:]
    finally:
        assert stop(agent) == 0
        watch.close()

    text = log.read_text()
    assert text.count('"event": "agent_started"') == 2
    assert wrong_password not in text
    assert MQTT_PASSWORD not in text
    for secret in key_material(tmp_path / "state" / "keys"):
        assert secret not in text


def test_journal_lines_carry_syslog_priority(tmp_path: Path, numba_cache: Path) -> None:
    """With stderr on the stream that JOURNAL_STREAM names, each JSON line starts with its priority for journald; elsewhere it does not."""
    config = write_config(tmp_path, 1)  # no key: the agent logs agent_starting (info), then agent_failed (error), and exits
    for journal in (True, False):
        log = tmp_path / f"agent-{journal}.log"
        log.touch()
        info = log.stat()
        env = {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"} if journal else {"JOURNAL_STREAM": "1:2"}
        assert start_agent(config, log, numba_cache, **env).wait(60) == 1
        lines = [line for line in log.read_text().splitlines() if '"event"' in line]
        events = {json.loads(line.split(">", 1)[1] if journal else line)["event"]: line for line in lines}
        prefix = ("<6>", "<3>") if journal else ("{", "{")
        assert events["agent_starting"].startswith(prefix[0]), lines
        assert events["agent_failed"].startswith(prefix[1]), lines
