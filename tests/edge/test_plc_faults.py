"""The agent process against a real pymodbus simulator: a clock tag mapped in the wrong word order, a PLC restart, then the PLC going away."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from valuegate.adapters.tagmap import shipped_tag_map_dir
from valuegate.edge import keys
from valuegate.services import MosquittoServer, free_port
from valuegate.simulators.modbus_line import BottlingModbusSimulator

from .helpers import write_config

pytestmark = pytest.mark.mosquitto

FILLER_MAP = shipped_tag_map_dir() / "demo" / "bottling-filler-modbus.yaml"


def wrong_order_map(folder: Path) -> Path:
    """Write the bottling filler map with the clock's CDAB order (low word first) mistyped as ABCD."""
    text = FILLER_MAP.read_text(encoding="utf-8")
    clock_line = "  - {name: clock, table: holding_register, address: 6, type: uint64, order: CDAB,"
    assert clock_line in text
    path = folder / "filler-wrong-clock.yaml"
    path.write_text(text.replace(clock_line, clock_line.replace("CDAB", "ABCD")), encoding="utf-8")
    return path


def metric(port: int, name: str, **labels: str) -> float:
    """Return one sample of the agent's /metrics page, 0 while the page or the sample is not there yet."""
    wanted = name + ("{" + ",".join(f'{key}="{value}"' for key, value in sorted(labels.items())) + "}" if labels else "")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            page = response.read().decode()
    except urllib.error.URLError:
        return 0.0
    for line in page.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


def run_agent(config: Path, stderr_path: Path, numba_cache: Path) -> subprocess.Popen[bytes]:
    """Start `valuegate edge run` at its default log level, its JSON log lines going to ``stderr_path``."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(numba_cache)}
    with open(stderr_path, "wb") as stderr:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "valuegate"), "edge", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL, stderr=stderr, env=env, start_new_session=True,
        )


async def wait_for(check, *, timeout_s: float, agent: subprocess.Popen[bytes]) -> None:  # noqa: ANN001
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert agent.poll() is None, f"the agent exited with status {agent.returncode}"
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.2)


async def test_wrong_clock_order_and_lost_plc(tmp_path: Path, mosquitto: MosquittoServer, numba_cache: Path) -> None:
    metrics_port = free_port()
    async with BottlingModbusSimulator(port=0, speed=3600, days=1) as plc:
        device = {"protocol": "modbus", "host": "127.0.0.1", "port": plc.port, "unit_id": 1, "poll_ms": 100, "timeout_ms": 500,
                  "reconnect_min_ms": 100, "reconnect_max_ms": 300}
        config = write_config(
            tmp_path, mosquitto.port, metrics={"port": metrics_port},
            devices=[{**device, "id": "filler-good", "tag_map": str(FILLER_MAP)},
                     {**device, "id": "filler-wrong", "tag_map": str(wrong_order_map(tmp_path))}],
        )
        keys.create_key(tmp_path / "state" / "keys")
        stderr_path = tmp_path / "agent.stderr"
        agent = run_agent(config, stderr_path, numba_cache)
        try:
            # The good machine produces minute records while the other one's clock is refused on every poll.
            await wait_for(lambda: metric(metrics_port, "valuegate_minutes_summarized_total", machine="filler-good") >= 60,
                           timeout_s=60, agent=agent)
            await wait_for(lambda: metric(metrics_port, "valuegate_implausible_plc_times_total", machine="filler-wrong", tag="clock") >= 5,
                           timeout_s=10, agent=agent)
            assert metric(metrics_port, "valuegate_minutes_summarized_total", machine="filler-wrong") == 0
            assert metric(metrics_port, "valuegate_spool_rejected_total", machine="filler-wrong") == 0

            # The PLC restarts: its state_seq starts again from 0, which is a reset, not 65,000 missed transitions.
            await plc.inject("plc_restart:down=0.5")
            await wait_for(lambda: '"state_seq_reset"' in stderr_path.read_text(encoding="utf-8"), timeout_s=15, agent=agent)
            await wait_for(lambda: metric(metrics_port, "valuegate_device_connected", device="filler-good") == 1, timeout_s=10, agent=agent)
            # The rebuilt connection shows in /metrics, so a link that flaps between two scrapes is still seen.
            await wait_for(lambda: metric(metrics_port, "valuegate_device_reconnects_total", device="filler-good") >= 1, timeout_s=10, agent=agent)
            missed = metric(metrics_port, "valuegate_missed_transitions_total", machine="filler-good")
            transitions = plc.truth.status_at(plc.clock.now_ms).changes
            assert missed <= transitions, f"{missed:g} transitions missed of the {transitions} the PLC made"

            # The PLC goes away: the agent logs its own retries with device, cause and delay, and keeps running.
            await plc.server.stop()
            await wait_for(lambda: metric(metrics_port, "valuegate_device_connected", device="filler-good") == 0, timeout_s=10, agent=agent)
            await asyncio.sleep(1.5)
            assert agent.poll() is None
        finally:
            if agent.poll() is None:
                os.kill(agent.pid, signal.SIGTERM)
            status = await asyncio.to_thread(agent.wait, 20)

    assert status == 0
    lines = stderr_path.read_text(encoding="utf-8").splitlines()
    events = []
    for number, line in enumerate(lines, 1):
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"agent stderr line {number} is not JSON: {line!r}")
    implausible = [event for event in events if event["event"] == "plc_time_implausible"]
    assert len(implausible) == 1, "a repeated implausible clock is logged once a minute"
    assert (implausible[0]["machine"], implausible[0]["tag"], implausible[0]["level"]) == ("filler-wrong", "clock", "warning")
    assert implausible[0]["detail"].startswith("implausible_time: value ")
    assert "check the tag's byte/word order" in implausible[0]["detail"]
    resets = [event for event in events if event["event"] == "state_seq_reset"]
    assert [(event["machine"], event["value"] < event["previous"]) for event in resets] == [("filler-good", True)]
    assert not [event for event in events if event.get("logger", "").startswith(("pymodbus", "asyncua"))], "library lines stay out of the journal"
    lost = [event for event in events if event["event"] in ("modbus.disconnected", "modbus.connect_failed", "modbus.retry_failed")]
    assert {event["device"] for event in lost} == {"filler-good", "filler-wrong"}
    for event in lost:
        assert event["cause"] in ("closed", "resets", "refused", "timeouts", "connect_failures")
        assert event["retry_in_s"] > 0
    assert not any(event["level"] == "debug" for event in events)
    assert [event["event"] for event in events][-1] == "agent_stopped"


LIBRARY_LINES = """
import logging
from valuegate.edge.cli_agent import _configure_logging
_configure_logging({level!r})
logging.getLogger("pymodbus.logging").error("No response received after 0 retries\\n>>>>> send: 0x0 0x7e")
logging.getLogger("asyncua.client.ua_session").error("Publish iteration crashed; retrying in 1s")
logging.getLogger("asyncua.client.ua_client").warning("ServiceFault (BadUserAccessDenied, diagnostics: ...)")
logging.getLogger("asyncua.client.client").critical("cannot go on")
logging.getLogger("valuegate.edge.agent").warning("own_warning")
"""


@pytest.mark.parametrize(("level", "expected"), [
    ("info", ["cannot go on", "own_warning"]),
    ("debug", ["No response received after 0 retries\n>>>>> send: 0x0 0x7e", "Publish iteration crashed; retrying in 1s",
               "ServiceFault (BadUserAccessDenied, diagnostics: ...)", "cannot go on", "own_warning"]),
])
def test_library_log_levels(level: str, expected: list[str]) -> None:
    """asyncua's and pymodbus's errors repeat at every retry without a device id; the adapters log those themselves."""
    result = subprocess.run([sys.executable, "-c", LIBRARY_LINES.format(level=level)], capture_output=True, text=True, timeout=60, check=True)
    assert [json.loads(line)["event"] for line in result.stderr.splitlines()] == expected


def test_debug_lines_hide_opcua_password() -> None:
    """asyncua logs whole requests at debug level; a user token that the channel alone encrypts shows its password."""
    script = """
import logging
from valuegate.edge.cli_agent import _configure_logging
_configure_logging("debug")
logging.getLogger("asyncua.client.ua_client").debug(
    "Sending: %s", "ActivateSessionRequest(UserIdentityToken=UserNameIdentityToken(PolicyId='username', UserName='valuegate', "
    "Password=b's3cret-\\\\'quoted', EncryptionAlgorithm=None))")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    (line,) = [json.loads(line)["event"] for line in result.stderr.splitlines()]
    assert "s3cret" not in line
    assert "quoted" not in line
    assert "UserName='valuegate', Password=b'***', EncryptionAlgorithm=None" in line


async def test_plc_clock_steps(tmp_path: Path, mosquitto: MosquittoServer, numba_cache: Path) -> None:
    """The PLC clock set 40 years ahead, right again, then 2 h back: nothing floods the spool, and data resumes each time."""
    import sqlite3

    metrics_port = free_port()

    def closed() -> float:
        return metric(metrics_port, "valuegate_minutes_summarized_total", machine="filler-1")

    def steps(direction: str) -> float:
        return metric(metrics_port, "valuegate_plc_clock_steps_total", machine="filler-1", direction=direction)

    async with BottlingModbusSimulator(port=0, speed=600, days=1) as plc:
        device = {"protocol": "modbus", "host": "127.0.0.1", "port": plc.port, "unit_id": 1, "poll_ms": 100, "timeout_ms": 500,
                  "id": "filler-1", "tag_map": str(FILLER_MAP)}
        config = write_config(tmp_path, mosquitto.port, metrics={"port": metrics_port}, devices=[device])
        keys.create_key(tmp_path / "state" / "keys")
        stderr_path = tmp_path / "agent.stderr"
        agent = run_agent(config, stderr_path, numba_cache)
        try:
            await wait_for(lambda: closed() >= 20, timeout_s=60, agent=agent)
            await plc.inject(f"clock_step:by={40 * 365 * 86_400}")
            await wait_for(lambda: steps("ahead") == 1, timeout_s=10, agent=agent)
            before = closed()
            await asyncio.sleep(2.0)  # 20 minutes of replay on the wrong clock: no minute closes, none is made up
            assert closed() <= before + 1

            await plc.inject("clock_step:by=0")
            await wait_for(lambda: closed() >= before + 10, timeout_s=20, agent=agent)
            await plc.inject("clock_step:by=-7200")
            await wait_for(lambda: steps("back") == 1, timeout_s=10, agent=agent)
            # Back by 2 h: offline until the clock passes what is stored (12 s of replay at 600x), then minutes close again.
            resumed = closed()
            await wait_for(lambda: closed() >= resumed + 10, timeout_s=40, agent=agent)
        finally:
            if agent.poll() is None:
                os.kill(agent.pid, signal.SIGTERM)
            status = await asyncio.to_thread(agent.wait, 20)
    assert status == 0
    events = [json.loads(line) for line in stderr_path.read_text(encoding="utf-8").splitlines() if line.startswith("{")]
    logged = [(event["direction"], event["level"]) for event in events if event["event"] == "plc_clock_step"]
    assert logged == [("ahead", "warning"), ("back", "warning")]
    with sqlite3.connect(tmp_path / "state" / "spool.db") as db:
        latest = db.execute("SELECT max(minute_ms) FROM minutes WHERE machine = 'filler-1'").fetchone()[0]
        count = db.execute("SELECT count(*) FROM minutes WHERE machine = 'filler-1'").fetchone()[0]
    # The replay covers one recorded day: every minute record lies within it.
    assert count <= 1_440
    assert latest < plc.truth.end_ms
