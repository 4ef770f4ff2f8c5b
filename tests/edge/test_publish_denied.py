"""A gateway whose topics the broker's ACL denies: one ERROR naming the topic and the user, and no flood of connect lines."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
import structlog.testing

from valuegate.services import MosquittoServer

from .helpers import SITE, TENANT
from .test_publish import gateway, wait_until

PASSWORD = "acl-test-pw"
# The pattern ACL of docs/cloud.md: each gateway user may use only the topics under its own name.
ACL = """\
pattern write valuegate/v1/%u/vouchers
pattern write valuegate/v1/%u/telemetry
pattern readwrite valuegate/v1/%u/status
pattern read valuegate/v1/%u/ack
pattern read valuegate/v1/%u/resend
"""
OTHER_USER = f"{TENANT}/{SITE}/gw-2"


@pytest.fixture
def acl_broker() -> Iterator[MosquittoServer]:
    folder = Path(tempfile.mkdtemp(prefix="valuegate-acl-"))
    folder.chmod(0o755)
    passwords = folder / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), OTHER_USER, PASSWORD], check=True, capture_output=True)
    passwords.chmod(0o644)
    (folder / "acl").write_text(ACL, encoding="utf-8")
    (folder / "acl").chmod(0o644)
    try:
        with MosquittoServer(extra_config=[f"password_file {passwords}", f"acl_file {folder / 'acl'}", "allow_anonymous false"]) as broker:
            yield broker
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def test_publish_denied_logs_error(tmp_path: Path, acl_broker: MosquittoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # The gateway is gw-1, but it logs in as gw-2's user, so the ACL denies every topic it publishes on.
    monkeypatch.setenv("ACL_TEST_PASSWORD", PASSWORD)
    mqtt = {"username": OTHER_USER, "password_env": "ACL_TEST_PASSWORD", "reconnect_min_s": 0.2, "reconnect_max_s": 2}
    with structlog.testing.capture_logs() as logged:
        async with gateway(tmp_path / "gw", acl_broker.port, mqtt=mqtt) as gw:
            await gw.issue(2)
            assert await wait_until(lambda: gw.publisher.connections >= 4, 20)
            connections = gw.publisher.connections
    denied = [entry for entry in logged if entry["event"] == "mqtt_publish_denied"]
    assert len(denied) == 1, denied
    assert denied[0]["log_level"] == "error"
    assert denied[0]["topic"] == f"valuegate/v1/{TENANT}/{SITE}/gw-1/status"
    assert denied[0]["username"] == OTHER_USER
    assert denied[0]["reason_code"] == "0x87"
    assert "broker's ACL" in denied[0]["detail"]
    assert f"the user must be {TENANT}/{SITE}/gw-1" in denied[0]["detail"]
    # The error replaces the generic warning for a rejected publish, which names no topic.
    assert not [entry for entry in logged if entry["event"] == "mqtt_publish_rejected"]
    assert gw.publisher.metrics.value("valuegate_publish_rejected_total") >= 1
    # The broker closes each connection at once; the agent logs its first connect line, then at most one a minute.
    connected = [entry for entry in logged if entry["event"] == "mqtt_connected"]
    assert len(connected) == 1, f"{len(connected)} connect lines for {connections} connections"
    assert connected[0]["connections"] == 1


async def test_reconnect_after_stable_session_logged(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    with structlog.testing.capture_logs() as logged:
        async with gateway(tmp_path / "gw", mosquitto.port) as gw:
            assert await wait_until(lambda: gw.publisher.connected, 10)
            first = gw.publisher._connected_at
            assert first is not None
            # The connection counts as stable once it lasted _STABLE_SESSION_S, so the reconnect after a broker restart is logged.
            gw.publisher._last_connected_at = first - 60
            mosquitto.restart()
            await wait_until(lambda: gw.publisher.connections == 2 and gw.publisher.connected, 20)
            assert gw.publisher.connections == 2
            assert gw.publisher.connected
    connected = [entry for entry in logged if entry["event"] == "mqtt_connected"]
    assert [entry["connections"] for entry in connected] == [1, 2]
