"""Reading the rejection notice of a cloud ack, how long the health report shows it, and keeping it in the spool across restarts."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.publish as publish
import pytest
from structlog.testing import capture_logs

from valuegate.edge import keys
from valuegate.edge.rejection_notice import RecentRejection, RejectionNotice, load_notice, parse_notice, save_notice
from valuegate.edge.spool import Spool
from valuegate.services import MosquittoServer, free_port

from .helpers import GATEWAY, SITE, TENANT, write_config
from .test_agent_process import StatusWatch, start_agent, stop

NOTICE = {"kind": "telemetry", "code": "signature_missing", "voucher_id": None, "reason": "no valuegate-signature property"}


def test_notice_read_from_ack() -> None:
    ack = {"schema": "valuegate/ack/v1", "stored_through": 4, "rejected": NOTICE}
    assert parse_notice(ack) == RejectionNotice("telemetry", "signature_missing", None, "no valuegate-signature property")
    long_reason = parse_notice({"rejected": {**NOTICE, "kind": "voucher", "voucher_id": "gw:3", "reason": "x" * 900}})
    assert long_reason is not None
    assert (long_reason.voucher_id, len(long_reason.reason)) == ("gw:3", 500)


@pytest.mark.parametrize(
    "ack",
    [
        {"schema": "valuegate/ack/v1", "stored_through": 4},
        {"rejected": "key_unknown"},
        {"rejected": {**NOTICE, "kind": "status"}},
        {"rejected": {**NOTICE, "code": "Key Unknown"}},
        {"rejected": {**NOTICE, "code": "k" * 41}},
        {"rejected": {**NOTICE, "code": 7}},
        [NOTICE],
    ],
)
def test_malformed_notice_ignored(ack: Any) -> None:
    assert parse_notice(ack) is None


def test_recent_rejection_window() -> None:
    now = [1_764_900_000.0]
    recent = RecentRejection(window_s=600.0, clock=lambda: now[0])
    assert recent.current() is None
    recent.note(RejectionNotice("voucher", "key_unknown", "gw:1", "not registered"))
    now[0] += 600.0
    assert recent.current() == {"kind": "voucher", "code": "key_unknown", "voucher_id": "gw:1", "reason": "not registered", "received_at": "2025-12-05T02:00:00+00:00"}
    now[0] += 0.5
    assert recent.current() is None


def test_notice_stored_and_restored(tmp_path: Path) -> None:
    now = [1_764_900_000.0]
    before = RecentRejection(window_s=600.0, clock=lambda: now[0])
    assert before.take_unsaved() is None
    before.note(RejectionNotice("voucher", "key_unknown", "gw:1", "not registered"))
    text = before.take_unsaved()
    assert text is not None
    assert before.take_unsaved() is None

    spool = Spool(tmp_path / "spool.db")
    save_notice(spool, text)
    spool.close()
    spool = Spool(tmp_path / "spool.db")
    stored = load_notice(spool)
    spool.close()

    now[0] += 300.0
    after = RecentRejection(window_s=600.0, clock=lambda: now[0])
    after.restore(stored)
    assert after.current() == before.current()
    assert after.current()["received_at"] == "2025-12-05T02:00:00+00:00"
    # Restored, not received: nothing new to store.
    assert after.take_unsaved() is None
    now[0] += 300.5
    assert after.current() is None


def test_restore_keeps_newer_notice() -> None:
    now = [1_764_900_000.0]
    old = RecentRejection(clock=lambda: now[0])
    old.note(RejectionNotice("voucher", "key_unknown", "gw:1", "not registered"))
    text = old.take_unsaved()
    assert text is not None

    now[0] += 5.0
    recent = RecentRejection(clock=lambda: now[0])
    recent.note(RejectionNotice("telemetry", "signature_missing", None, "no signature"))
    recent.restore(text)
    assert recent.current()["code"] == "signature_missing"


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        json.dumps([NOTICE]),
        json.dumps(NOTICE),
        json.dumps({**NOTICE, "received_s": "yesterday"}),
        json.dumps({**NOTICE, "received_s": True}),
        json.dumps({**NOTICE, "code": "Key Unknown", "received_s": 1_764_900_000.0}),
    ],
)
def test_unreadable_stored_notice_ignored(text: str) -> None:
    recent = RecentRejection(clock=lambda: 1_764_900_000.0)
    with capture_logs() as events:
        recent.restore(text)
    assert recent.current() is None
    assert [event["event"] for event in events] == ["cloud_rejection_unreadable"]


def test_notice_from_future_ignored() -> None:
    """A notice stamped more than the window ahead means the clock was set back; it would otherwise show for that long."""
    recent = RecentRejection(window_s=600.0, clock=lambda: 1_764_900_000.0)
    recent.restore(json.dumps({**NOTICE, "received_s": 1_764_900_000.0 + 601}))
    assert recent.current() is None
    recent.restore(json.dumps({**NOTICE, "received_s": 1_764_900_000.0 + 60}))
    assert recent.current()["code"] == "signature_missing"


def health(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        return json.loads(response.read())


def wait_health(port: int, agent: subprocess.Popen[bytes], log: Path, check: Callable[[dict[str, Any]], bool], timeout_s: float = 60) -> dict[str, Any]:
    """Poll the agent process's /healthz until ``check`` holds; fail with the log's tail when it exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    report: dict[str, Any] = {}
    while time.monotonic() < deadline:
        assert agent.poll() is None, log.read_text()[-2000:]
        try:
            report = health(port)
        except OSError:
            report = {}
        if report and check(report):
            return report
        time.sleep(0.1)
    pytest.fail(f"/healthz never matched; last report {report}; log tail:\n{log.read_text()[-2000:]}")


def wait_stored(spool: Path, timeout_s: float) -> bool:
    """Return whether the spool's meta table contains a rejection notice within ``timeout_s``, read through a separate connection."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with sqlite3.connect(spool) as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'cloud_rejection'").fetchone()
        db.close()
        if row and row[0]:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.mosquitto
def test_notice_survives_agent_restart(tmp_path: Path, mosquitto: MosquittoServer, numba_cache: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, mosquitto.port, metrics={"host": "127.0.0.1", "port": port})
    keys.create_key(tmp_path / "state" / "keys")
    log = tmp_path / "agent.log"
    ack = {"schema": "valuegate/ack/v1", "stored_through": 0, "rejected": {**NOTICE, "kind": "voucher", "code": "key_unknown", "voucher_id": "gw-1:1"}}

    watch = StatusWatch(mosquitto.port)
    agent = start_agent(config, log, numba_cache)
    try:
        # The agent subscribes to its ack topic before it announces itself online, so the ack below reaches it.
        assert watch.wait_for("online", timeout_s=60) is not None, log.read_text()[-2000:]
        assert health(port)["cloud_rejection"] is None
        publish.single(f"valuegate/v1/{TENANT}/{SITE}/{GATEWAY}/ack", json.dumps(ack), qos=1, hostname="127.0.0.1", port=mosquitto.port)
        first = wait_health(port, agent, log, lambda report: report["cloud_rejection"] is not None)["cloud_rejection"]
        # The health report shows a notice on arrival; the publisher stores it at its next settle, a moment later.
        assert wait_stored(tmp_path / "state" / "spool.db", 10), log.read_text()[-2000:]
    finally:
        # SIGKILL: no clean shutdown that could store the notice late.
        stop(agent, signal.SIGKILL)
        watch.close()
    assert first["code"] == "key_unknown"
    assert first["voucher_id"] == "gw-1:1"

    agent = start_agent(config, log, numba_cache)
    try:
        restarted = wait_health(port, agent, log, lambda report: "cloud_rejection" in report)["cloud_rejection"]
        # The broker may deliver the ack again to the resumed session (the kill can beat the agent's PUBACK), which notes it anew.
        assert {key: value for key, value in restarted.items() if key != "received_at"} == {key: value for key, value in first.items() if key != "received_at"}
        assert first["received_at"] <= restarted["received_at"]
    finally:
        assert stop(agent) == 0

    # The same notice, 601 seconds old: after the next start it has aged out.
    with sqlite3.connect(tmp_path / "state" / "spool.db") as db:
        stored = json.loads(db.execute("SELECT value FROM meta WHERE key = 'cloud_rejection'").fetchone()[0])
        stored["received_s"] = time.time() - 601
        db.execute("UPDATE meta SET value = ? WHERE key = 'cloud_rejection'", (json.dumps(stored),))
    db.close()
    agent = start_agent(config, log, numba_cache)
    try:
        aged = wait_health(port, agent, log, lambda report: "cloud_rejection" in report)
        assert aged["cloud_rejection"] is None
    finally:
        assert stop(agent) == 0
