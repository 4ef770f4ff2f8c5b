"""The agent process against PLC clocks that step: an agent restart while the clock is years ahead, and OPC UA clock steps."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from valuegate.adapters.tagmap import shipped_tag_map_dir
from valuegate.edge import keys
from valuegate.services import MosquittoServer, free_port
from valuegate.simulators.modbus_line import BottlingModbusSimulator
from valuegate.simulators.mtconnect_opcua import MtconnectOpcUaSimulator

from .helpers import write_config
from .test_plc_faults import FILLER_MAP, metric, run_agent, wait_for

pytestmark = pytest.mark.mosquitto

MAZAK_MAP = shipped_tag_map_dir() / "demo" / "mazak-mtconnect-opcua.yaml"
FORTY_YEARS_S = 40 * 365 * 86_400


def spooled_minutes(state: Path, machine: str) -> tuple[int, int | None]:
    """Return how many minute records the spool holds for ``machine`` and the latest one's start (epoch ms)."""
    with sqlite3.connect(f"file:{state / 'spool.db'}?mode=ro", uri=True) as db:
        return db.execute("SELECT count(*), max(minute_ms) FROM minutes WHERE machine = ?", (machine,)).fetchone()


def spooled_count(state: Path, machine: str, stderr_path: Path) -> int:
    """Return how many minute records the spool holds, 0 until the agent has logged its start (and so created the spool).

    The count comes from the agent's own state folder: a metrics port chosen free may be taken by another process before the agent binds it.
    """
    if '"agent_started"' not in stderr_path.read_text(encoding="utf-8"):
        return 0
    return spooled_minutes(state, machine)[0]


def clock_steps_logged(stderr_path: Path) -> list[tuple[str, str]]:
    """Return (direction, level) of each ``plc_clock_step`` line the agent has written so far."""
    logged = []
    for line in stderr_path.read_text(encoding="utf-8").splitlines() if stderr_path.exists() else []:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # the line the agent is still writing
        if event["event"] == "plc_clock_step":
            logged.append((event["direction"], event["level"]))
    return logged


async def stop_agent(agent: subprocess.Popen[bytes]) -> int:
    if agent.poll() is None:
        os.kill(agent.pid, signal.SIGTERM)
    return await asyncio.to_thread(agent.wait, 20)


async def test_restart_with_clock_years_ahead(tmp_path: Path, mosquitto: MosquittoServer, numba_cache: Path) -> None:
    """The agent restarts while the PLC clock reads 40 years ahead: no minute for the wrong years, and recording resumes once it is right."""
    keys.create_key(tmp_path / "state" / "keys")
    async with BottlingModbusSimulator(port=0, speed=600, days=1, wait_for_client=True) as plc:
        device = {"protocol": "modbus", "host": "127.0.0.1", "port": plc.port, "unit_id": 1, "poll_ms": 100, "timeout_ms": 500,
                  "id": "filler-1", "tag_map": str(FILLER_MAP)}

        first_port = free_port()
        config = write_config(tmp_path, mosquitto.port, metrics={"port": first_port}, devices=[device])
        first_log = tmp_path / "agent-1.stderr"
        agent = run_agent(config, first_log, numba_cache)
        try:
            await wait_for(lambda: spooled_count(tmp_path / "state", "filler-1", first_log) >= 20, timeout_s=60, agent=agent)
            await plc.inject(f"clock_step:by={FORTY_YEARS_S}")
            await wait_for(lambda: clock_steps_logged(first_log) == [("ahead", "warning")], timeout_s=10, agent=agent)
            assert metric(first_port, "valuegate_plc_clock_steps_total", machine="filler-1", direction="ahead") == 1
        finally:
            assert await stop_agent(agent) == 0
        stored, latest = spooled_minutes(tmp_path / "state", "filler-1")

        port = free_port()
        config = write_config(tmp_path, mosquitto.port, metrics={"port": port}, devices=[device])
        second_log = tmp_path / "agent-2.stderr"
        agent = run_agent(config, second_log, numba_cache)
        try:
            # The first reading after the start is 40 years ahead of the spool and of the gateway's clock: held, not the new base.
            await wait_for(lambda: clock_steps_logged(second_log) == [("ahead", "warning")], timeout_s=30, agent=agent)
            assert metric(port, "valuegate_plc_clock_steps_total", machine="filler-1", direction="ahead") == 1
            await asyncio.sleep(3.0)  # 30 minutes of replay on the wrong clock
            held_count, held_latest = spooled_minutes(tmp_path / "state", "filler-1")
            assert held_count <= stored + 1
            assert held_latest < plc.truth.end_ms

            await plc.inject("clock_step:by=0")
            await wait_for(lambda: spooled_count(tmp_path / "state", "filler-1", second_log) >= held_count + 10, timeout_s=30, agent=agent)
        finally:
            assert await stop_agent(agent) == 0

    assert clock_steps_logged(first_log) == [("ahead", "warning")]
    assert clock_steps_logged(second_log) == [("ahead", "warning")]
    count, latest = spooled_minutes(tmp_path / "state", "filler-1")
    # The replay covers one recorded day: every minute record lies within it.
    assert stored + 10 <= count <= 1_440
    assert latest < plc.truth.end_ms


async def test_opcua_clock_steps(tmp_path: Path, mosquitto: MosquittoServer, numba_cache: Path) -> None:
    """An OPC UA server's SourceTimestamps set 40 years ahead, right again, then 30 days back: held, logged and counted as over Modbus."""
    port = free_port()
    stderr_path = tmp_path / "agent.stderr"

    def closed() -> int:
        return spooled_count(tmp_path / "state", "mazak-1", stderr_path)

    def steps(direction: str) -> int:
        return [logged for logged, _ in clock_steps_logged(stderr_path)].count(direction)

    keys.create_key(tmp_path / "state" / "keys")
    async with MtconnectOpcUaSimulator("mazak03", port=0, speed=600, days=1, wait_for_client=True) as mill:
        device = {"protocol": "opcua", "endpoint": mill.endpoint, "id": "mazak-1", "tag_map": str(MAZAK_MAP), "publishing_interval_ms": 50,
                  "sampling_ms": 10, "timeout_ms": 2000, "reconnect_min_ms": 100, "reconnect_max_ms": 300}
        config = write_config(tmp_path, mosquitto.port, metrics={"port": port}, devices=[device])
        agent = run_agent(config, stderr_path, numba_cache)
        try:
            await wait_for(lambda: closed() >= 20, timeout_s=60, agent=agent)
            await mill.inject(f"clock_step:by={FORTY_YEARS_S}")
            await wait_for(lambda: steps("ahead") == 1, timeout_s=10, agent=agent)
            assert metric(port, "valuegate_plc_clock_steps_total", machine="mazak-1", direction="ahead") == 1
            before = closed()
            await asyncio.sleep(2.0)  # 20 minutes of replay on the wrong clock: no minute closes, none is made up
            assert closed() <= before + 1

            await mill.inject("clock_step:by=0")
            await wait_for(lambda: closed() >= before + 10, timeout_s=20, agent=agent)
            # Back by 30 days: a replay's clock may deviate by 5 s of gateway time at its rate (hours at the rates a replay
            # jumping over idle spans reaches), so a smaller step would pass. Offline until the clock passes what is stored.
            await mill.inject(f"clock_step:by={-30 * 86_400}")
            await wait_for(lambda: steps("back") == 1, timeout_s=10, agent=agent)
            assert metric(port, "valuegate_plc_clock_steps_total", machine="mazak-1", direction="back") == 1
            held = closed()
            await asyncio.sleep(1.0)  # 10 minutes of replay behind what is stored: no minute closes
            assert closed() <= held + 1
            await mill.inject("clock_step:by=0")
            await wait_for(lambda: closed() >= held + 10, timeout_s=20, agent=agent)
        finally:
            assert await stop_agent(agent) == 0

    assert clock_steps_logged(stderr_path) == [("ahead", "warning"), ("back", "warning")]
    count, latest = spooled_minutes(tmp_path / "state", "mazak-1")
    assert count <= 1_440 + 60
    assert latest < mill.end_ms
