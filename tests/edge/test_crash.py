"""The agent process killed with SIGKILL at seeded random moments of a 2,000-voucher replay, then stopped by SIGTERM.

A pymodbus server (the simulators' RegisterServer) plays the bottling
filler; its PLC clock advances one step each time the agent has polled, so
the replay pauses while the agent is down. Each round kills the running
agent with SIGKILL and starts it again on the same state folder. At the end
the stand-in ingest must hold every expected voucher exactly once, in one
unbroken chain, and the agent's outbox must be empty.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from valuegate.adapters.tagmap import load_tag_map, shipped_tag_map_dir
from valuegate.edge import keys
from valuegate.services import MosquittoServer
from valuegate.simulators.modbus_server import RegisterServer

from .helpers import GATEWAY, SITE, TENANT, write_config
from .standin import AckResponder

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

FILLER_MAP = shipped_tag_map_dir() / "demo" / "bottling-filler-modbus.yaml"
ANCHORS = 40
REPORTING_DAYS = 50
KILLS = int(os.environ.get('VG_KILLS', 10))
SEED = 20261204
STEP_MS = 3_600_000
T0 = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
END = T0 + (2 + REPORTING_DAYS) * 86_400_000 + STEP_MS


class Plc:
    """The filler's registers on a background event loop; :meth:`advance` moves the PLC clock one step."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = RegisterServer(load_tag_map(FILLER_MAP), port=0, unit_id=1)
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        self.clock = T0
        self.state, self.since, self.changes, self.containers = 1, T0, 0, 0
        self._publish()

    def _publish(self) -> None:
        values = {
            "state": self.state,
            "reason": 17 if self.state == 2 else 0,
            "state_since": self.since,
            "clock": self.clock,
            "containers": self.containers,
            "state_changes": self.changes,
        }
        self.loop.call_soon_threadsafe(self.server.set_values, values)

    def advance(self) -> None:
        self.clock += STEP_MS
        wanted = 2 if (self.clock - T0) // STEP_MS % 6 == 5 else 1
        if wanted != self.state:
            self.state, self.since, self.changes = wanted, self.clock - 600_000, self.changes + 1
        if self.state == 1:
            self.containers = (self.containers + 1000) % 65536
        self._publish()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def write_contract(folder: Path) -> Path:
    last = dt.date(2026, 1, 3) + dt.timedelta(days=REPORTING_DAYS - 1)
    anchors = [
        {
            "id": f"a{index:02d}",
            "scope": ["filler-1"],
            "metric": "oee_points" if index % 2 else "unplanned_downtime_rate",
            "baseline": {"first_date": "2026-01-01", "last_date": "2026-01-02", "min_days": 1},
            "reporting": {"first_date": "2026-01-03", "last_date": last.isoformat()},
            "uncertainty": {"resamples": 100, "block_days": 1, "seed": index},
        }
        for index in range(ANCHORS)
    ]
    contract = {"schema": "valuegate/contract/v1", "id": "c-1", "tenant": TENANT, "customer": "Acme", "start": "2026-01-01", "end": "2026-12-31", "anchors": anchors}
    path = folder / "contract.yaml"
    path.write_text(yaml.safe_dump(contract), encoding="utf-8")
    return path


def start_agent(config: Path, log: Path, cache: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    command = [str(Path(sys.executable).parent / "valuegate"), "edge", "run", "--config", str(config)]
    with open(log, "ab") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def outbox_depth(state: Path) -> int:
    with sqlite3.connect(f"file:{state / 'spool.db'}?mode=ro", uri=True, timeout=10) as db:
        return db.execute("SELECT count(*) FROM outbox").fetchone()[0]


def drive(plc: Plc, agent: subprocess.Popen[bytes], *, for_s: float | None) -> None:
    """Advance the PLC one step per agent poll, for ``for_s`` seconds of polling or to the end of the replay."""
    last_requests, polled_since = plc.server.requests, None
    while plc.clock < END and agent.poll() is None:
        if plc.server.requests > last_requests:
            last_requests = plc.server.requests
            polled_since = polled_since or time.monotonic()
            plc.advance()
        if for_s is not None and polled_since is not None and time.monotonic() - polled_since > for_s:
            return
        time.sleep(0.004)


def test_sigkill_rounds_lose_nothing(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    plc = Plc()
    contract = write_contract(tmp_path)
    device = {
        "protocol": "modbus",
        "id": "filler",
        "host": "127.0.0.1",
        "port": plc.server.port,
        "unit_id": 1,
        "tag_map": str(FILLER_MAP),
        "poll_ms": 10,
        "timeout_ms": 500,
        "reconnect_min_ms": 50,
        "reconnect_max_ms": 200,
    }
    config = write_config(tmp_path, mosquitto.port, devices=[device], machines=[{"device": "filler", "id": "filler-1"}], contracts=[str(contract)])
    state = tmp_path / "state"
    keys.create_key(state / "keys")
    log = tmp_path / "agent.log"
    cache = Path(os.environ.get("NUMBA_CACHE_DIR", tmp_path / "numba"))
    cloud = AckResponder(mosquitto.port, tenant=TENANT, site=SITE, gateway=GATEWAY).start()
    rng = random.Random(SEED)
    agent = start_agent(config, log, cache)
    try:
        for _ in range(KILLS):
            drive(plc, agent, for_s=rng.uniform(0.2, 1.8))
            assert agent.poll() is None, log.read_text()[-3000:]
            os.kill(agent.pid, signal.SIGKILL)
            agent.wait(10)
            agent = start_agent(config, log, cache)

        drive(plc, agent, for_s=None)
        expected = ANCHORS * REPORTING_DAYS
        assert cloud.wait_for(expected, timeout_s=60) == expected, (cloud.rejected[:3], log.read_text()[-3000:])
        deadline = time.monotonic() + 30
        while outbox_depth(state) and time.monotonic() < deadline:
            time.sleep(0.1)

        stopped_at = time.monotonic()
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(10) == 0, log.read_text()[-3000:]
        assert time.monotonic() - stopped_at < 10
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(10)
        cloud.stop()
        plc.close()

    vouchers = cloud.vouchers()
    assert len(vouchers) == expected
    assert cloud.chain_problems() == []
    assert cloud.rejected == []
    days = {(v["credentialSubject"]["anchor"], v["credentialSubject"]["period"]["plant_date"]) for v in vouchers}
    first = dt.date(2026, 1, 3)
    assert days == {(f"a{a:02d}", (first + dt.timedelta(days=d)).isoformat()) for a in range(ANCHORS) for d in range(REPORTING_DAYS)}
    assert outbox_depth(state) == 0
    assert log.read_text().count('"event": "agent_started"') == KILLS + 1
