"""An ingest outage between real processes: `valuegate simulate`, `valuegate edge run`, Mosquitto, PostgreSQL and `valuegate cloud ingest`.

The simulator replays recorded days of the bottling line. While the agent
issues vouchers, the ingest process is stopped and later started again.
Afterwards every voucher must be stored once, reproduced from the stored
records, and acknowledged, so that the agent's outbox is empty.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import json
import signal
import subprocess
import sys
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.cloud.test_metrics_and_passwords import ingest_command, scrape
from tests.edge.helpers import TENANT, write_config
from tests.edge.realcloud import register
from tests.edge.test_agent_process import start_agent, stop
from tests.edge.test_publish import wait_until
from tests.recorded import RECORDINGS
from valuegate.cloud import db
from valuegate.cloud.admin import Admin
from valuegate.edge import keys
from valuegate.services import MosquittoServer, free_port, wait_for_port

pytestmark = [pytest.mark.mosquitto, pytest.mark.postgres, pytest.mark.slow]

# The first three production days of the recording are 2022-07-22, 2022-07-26 and 2022-08-01.
RECORDED_DAYS = 3
MACHINE = "filler-01"
CONTRACT = """
schema: valuegate/contract/v1
id: OUTAGE-BOTTLING
tenant: acme
customer: test
start: 2022-07-01
end: 2022-12-31
anchors:
  - id: filler-downtime
    scope: [filler-01]
    metric: unplanned_downtime_rate
    baseline: {first_date: 2022-07-22, last_date: 2022-07-26, min_days: 2}
    reporting: {first_date: 2022-07-27, last_date: 2022-08-01}
    uncertainty: {resamples: 200, block_days: 1, seed: 5}
    price: {per: avoided_minute, amount: "10.00"}
  - id: filler-availability
    scope: [filler-01]
    metric: availability_points
    baseline: {first_date: 2022-07-22, last_date: 2022-07-26, min_days: 2}
    reporting: {first_date: 2022-07-29, last_date: 2022-08-05}
    uncertainty: {resamples: 200, block_days: 1, seed: 5}
    price: {per: availability_point_day, amount: "100.00"}
"""
# Same group and client ids before and after the restart, so that the broker keeps the workers' sessions.
SHARE_GROUP = "outage"
# Short waits so that a voucher whose records are missing is asked for again within the test's time.
INGEST_SETTINGS = {"VALUEGATE_CLOUD_RECORDS_WAIT_S": "0", "VALUEGATE_CLOUD_REPRODUCE_INTERVAL_S": "0.5", "VALUEGATE_CLOUD_RESEND_INTERVAL_S": "1"}
TIMEOUT_S = 45.0


def expected_vouchers(contract: dict[str, Any], recorded_days: int) -> int:
    """Count the reporting days of each anchor up to the last replayed plant date: one voucher each.

    The replay covers every calendar day from the first to the last of the
    first ``recorded_days`` production days in the recording's daily summary.
    """
    with gzip.open(RECORDINGS / "bottling-line" / "daily_operation_summary.csv.gz", "rt", encoding="utf-8", newline="") as handle:
        serials = sorted({int(row["date"]) for row in csv.DictReader(handle)})
    last_replayed = dt.date(1899, 12, 30) + dt.timedelta(days=serials[recorded_days - 1])
    count = 0
    for anchor in contract["anchors"]:
        first, last = anchor["reporting"]["first_date"], min(anchor["reporting"]["last_date"], last_replayed)
        count += max(0, (last - first).days + 1)
    return count


def metric(url: str, name: str) -> float:
    """Return an unlabelled sample of a Prometheus endpoint, or -1 while the endpoint is not reachable."""
    try:
        return scrape(url).get((name, ()), 0.0)
    except (urllib.error.URLError, ConnectionError):
        return -1.0


def query(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, options=db.UTC_OPTIONS) as conn:
        return conn.execute(sql).fetchall()


def spawn(command: list[str], log: Path, **env: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env or None, start_new_session=True)


class Ingest:
    """`valuegate cloud ingest` as a process that the test stops and starts again with the same worker names."""

    def __init__(self, dsn: str, mqtt_port: int, log: Path) -> None:
        self.metrics_port = free_port()
        self.url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.command, self.env = ingest_command(dsn, mqtt_port, self.metrics_port)
        self.env |= {"VALUEGATE_CLOUD_SHARE_GROUP": SHARE_GROUP, **INGEST_SETTINGS}
        self.log = log
        self.log.touch()
        self.process: subprocess.Popen[bytes] | None = None
        self._run_offset = 0

    async def start(self, workers: int, **settings: str) -> None:
        """Start the process and return once its workers have subscribed."""
        self._run_offset = self.log.stat().st_size
        self.process = spawn([*self.command, "--workers", str(workers)], self.log, **self.env, **settings)
        running = await wait_until(lambda: "ingest worker(s) running" in self.run_output() or self.process.poll() is not None, 30)
        assert running and self.process.poll() is None, self.run_output()[-3000:]

    def stop(self, sig: int) -> int:
        assert self.process is not None
        return stop(self.process, sig)

    def run_output(self) -> str:
        """Return what the process started last has written."""
        with self.log.open("rb") as output:
            output.seek(self._run_offset)
            return output.read().decode(errors="replace")

    def sessions_present(self) -> list[bool]:
        """Return, per worker connection of the last run, whether the broker resumed the worker's session."""
        events = [json.loads(line) for line in self.run_output().splitlines() if line.startswith("{")]
        return [event["session_present"] for event in events if event.get("event") == "mqtt_connected"]


@pytest.fixture
def broker() -> Iterator[MosquittoServer]:
    """Mosquitto with persistence on, as the cloud guide advises for the ingest's queues."""
    with MosquittoServer(persistence=True) as server:
        yield server


@pytest.mark.parametrize(
    ("sig", "session_expiry_s", "workers_after"),
    [pytest.param(signal.SIGKILL, 1, 2, id="sigkill-sessions-expire"), pytest.param(signal.SIGTERM, 86_400, 1, id="sigterm-fewer-workers")],
)
async def test_ingest_outage_mid_replay(
    tmp_path: Path, broker: MosquittoServer, database: str, numba_cache: Path, sig: signal.Signals, session_expiry_s: int, workers_after: int
) -> None:
    """The ingest stops once it has stored the first records, and starts again when the agent has issued every voucher.

    Killed with a session expiry shorter than the outage, the ingest loses
    its broker sessions and what the broker queued for them: the agent must
    send the vouchers again and the records that the ingest requests.
    Stopped with SIGTERM, the ingest keeps its sessions and comes back with
    fewer workers, so the broker's queue for the other worker must be drained.
    """
    (tmp_path / "contract.yaml").write_text(CONTRACT, encoding="utf-8")
    expected = expected_vouchers(yaml.safe_load(CONTRACT), RECORDED_DAYS)
    db.migrate(database)
    key = keys.create_key(tmp_path / "state" / "keys")
    await register(database, key.verification_method)
    async with Admin(database, actor="test") as admin:
        await admin.upload_contract(TENANT, tmp_path / "contract.yaml")

    ingest = Ingest(database, broker.port, tmp_path / "ingest.log")
    simulator_port, agent_metrics_port = free_port(), free_port()
    simulator_command = [
        str(Path(sys.executable).parent / "valuegate"), "simulate", "bottling", "--port", str(simulator_port), "--days", str(RECORDED_DAYS),
        "--speed", "200000", "--hold-until-read", "--wait-for-client", "--linger", "300",
    ]  # fmt: skip
    device = {
        "id": MACHINE, "protocol": "modbus", "host": "127.0.0.1", "port": simulator_port, "unit_id": 1,
        "tag_map": "demo/bottling-filler-modbus.yaml", "poll_ms": 10, "timeout_ms": 10_000,
    }  # fmt: skip
    config = write_config(
        tmp_path, broker.port, devices=[device], time_zone="America/Sao_Paulo", contracts=[str(tmp_path / "contract.yaml")],
        metrics={"port": agent_metrics_port},
    )  # fmt: skip
    agent_url = f"http://127.0.0.1:{agent_metrics_port}/metrics"
    agent_log = tmp_path / "agent.log"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        await ingest.start(workers=2, VALUEGATE_CLOUD_MQTT_SESSION_EXPIRY_S=str(session_expiry_s))
        simulator = spawn(simulator_command, tmp_path / "simulator.log")
        processes.append(simulator)
        wait_for_port(simulator_port, timeout_s=30, process=simulator, what="valuegate simulate")
        processes.append(start_agent(config, agent_log, numba_cache))

        assert await wait_until(lambda: query(database, "SELECT count(*) FROM telemetry")[0][0] > 0, TIMEOUT_S), ingest.run_output()[-3000:]
        assert ingest.stop(sig) == (-signal.SIGKILL if sig == signal.SIGKILL else 0)
        assert 0 <= metric(agent_url, "valuegate_vouchers_issued_total") < expected
        stored_before = query(database, "SELECT count(*) FROM vouchers")[0][0]

        # The agent goes on replaying and issuing while the ingest is down.
        assert await wait_until(lambda: metric(agent_url, "valuegate_vouchers_issued_total") == expected, TIMEOUT_S), agent_log.read_text()[-3000:]
        assert query(database, "SELECT count(*) FROM vouchers")[0][0] == stored_before
        await ingest.start(workers=workers_after)
        # The broker resumed the workers' sessions only when they had not expired.
        assert ingest.sessions_present() == [session_expiry_s > 1] * workers_after

        def all_reproduced() -> bool:
            return query(database, "SELECT count(*) FILTER (WHERE reproduced) FROM voucher_chain")[0][0] == expected

        verdicts_sql = "SELECT seq, reproduced, reproduce_detail FROM voucher_chain ORDER BY seq"
        assert await wait_until(all_reproduced, TIMEOUT_S), query(database, verdicts_sql)
        # The contract is uploaded, so each baseline must be rebuilt from the stored records of the baseline period.
        for seq, _reproduced, detail in query(database, verdicts_sql):
            assert detail.endswith("with the baseline rebuilt from stored records"), (seq, detail)
        assert await wait_until(lambda: metric(ingest.url, "valuegate_vouchers_waiting_for_records") == 0, 5)
        # The agent refreshes its outbox gauge every 5 s.
        assert await wait_until(lambda: metric(agent_url, "valuegate_outbox_depth") == 0, 15)
        assert metric(agent_url, "valuegate_acked_through") == expected

        assert [seq for (seq,) in query(database, "SELECT seq FROM vouchers ORDER BY seq")] == list(range(1, expected + 1))
        assert query(database, "SELECT contiguous_through, highest_seq FROM gateway_chain") == [(expected, expected)]
        assert query(database, "SELECT count(*) FROM rejections") == [(0,)]
        if workers_after < 2:
            assert "retired 1 broker session(s)" in ingest.run_output()
    finally:
        for process in processes:
            stop(process, signal.SIGKILL)
        if ingest.process is not None:
            ingest.stop(signal.SIGKILL)
