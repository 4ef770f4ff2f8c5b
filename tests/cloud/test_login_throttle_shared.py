"""The failed log-in throttle across two `valuegate cloud serve` processes on one PostgreSQL database.

Both processes are started as operators start them, behind no load balancer: the test spreads
its requests over the two addresses itself. Every request comes from 127.0.0.1, so all of them
count for the same (user name, client address) pair.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from valuegate.cloud.db import UTC_OPTIONS
from valuegate.services import free_port

from .conftest import Gateway, make_user
from .test_user_admin import admin_cli

pytestmark = pytest.mark.postgres

PASSWORD = "clerk password 1"


class Server:
    """One `valuegate cloud serve` process, stopped by its PID."""

    def __init__(self, dsn: str, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        environment = {key: value for key, value in os.environ.items() if not key.startswith("VALUEGATE_CLOUD_")}
        command = [sys.executable, "-c", "from valuegate.cli import main; main()", "cloud", "serve", "--dsn", dsn, "--port", str(self.port)]
        with log_path.open("w") as log:
            self.process = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_started(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while self.process.poll() is None and time.monotonic() < deadline:
            lines = [line for line in self.log_path.read_text().splitlines() if line.startswith("{")]
            if any(json.loads(line).get("event") == "api_started" for line in lines):
                return
            time.sleep(0.1)
        raise AssertionError(f"cloud serve on port {self.port} did not start:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)


@pytest.fixture
def servers(cloud_dsn: str, two_tenants: tuple[Gateway, Gateway], tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    started = [Server(cloud_dsn, tmp_path / f"serve-{number}.log") for number in (1, 2)]
    try:
        for server in started:
            server.wait_started()
        yield started[0], started[1]
    finally:
        for server in started:
            server.stop()


@pytest.fixture
async def clerk(servers: tuple[Server, Server], cloud_dsn: str) -> str:
    await make_user(cloud_dsn, "acme", "ts-boss", ["admin"])
    await make_user(cloud_dsn, "acme", "ts-clerk", ["csm"], password=PASSWORD)
    return "ts-clerk"


async def api_log_in(server: Server, username: str, password: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        return await client.post("/api/v1/session", json={"username": username, "password": password})


async def web_log_in(server: Server, username: str, password: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        return await client.post("/login", data={"username": username, "password": password, "next": "/contracts"})


async def query(dsn: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn, options=UTC_OPTIONS, autocommit=True) as conn:
        cur = await conn.execute(sql, params)
        return await cur.fetchall() if cur.description else []


async def test_failures_on_both_count_together(servers: tuple[Server, Server], clerk: str) -> None:
    first, second = servers
    statuses = [(await api_log_in(server, clerk, "wrong password")).status_code for server in (first, second, first, second, first)]
    assert statuses == [401] * 5

    api = await api_log_in(second, clerk, PASSWORD)
    assert api.status_code == 429
    assert 295 <= int(api.headers["retry-after"]) <= 300
    assert api.json()["code"] == "too_many_requests"

    web = await web_log_in(first, clerk, PASSWORD)
    assert web.status_code == 429
    assert 295 <= int(web.headers["retry-after"]) <= 300


async def test_parallel_failures_stop_at_limit(servers: tuple[Server, Server], clerk: str) -> None:
    """Twelve wrong passwords sent at once, six to each process: five are checked, the rest get 429 at once."""
    first, second = servers
    responses = await asyncio.gather(*(api_log_in(server, clerk, "wrong password") for server in (first, second) * 6))
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [401] * 5 + [429] * 7


async def test_cli_enable_opens_both(servers: tuple[Server, Server], clerk: str, cloud_dsn: str) -> None:
    first, second = servers
    disabled = await admin_cli(cloud_dsn, "user-disable", "acme", clerk)
    assert disabled.exit_code == 0, disabled.output
    for server in (first, second, first, second, first):
        assert (await api_log_in(server, clerk, "wrong password")).status_code == 401
    for server in (first, second):
        assert (await api_log_in(server, clerk, PASSWORD)).status_code == 429

    enabled = await admin_cli(cloud_dsn, "user-enable", "acme", clerk)
    assert enabled.exit_code == 0, enabled.output
    both = await asyncio.gather(api_log_in(first, clerk, PASSWORD), api_log_in(second, clerk, PASSWORD))
    assert [response.status_code for response in both] == [201, 201]
    assert await query(cloud_dsn, "SELECT username FROM login_failures") == []


async def test_first_attempt_prunes_old_rows(servers: tuple[Server, Server], clerk: str, cloud_dsn: str) -> None:
    """Each process deletes expired rows at its first attempt; rows still in the window stay."""
    first, _second = servers
    await query(
        cloud_dsn,
        "INSERT INTO login_failures (username, client, failed_at, last_failed_at)"
        " SELECT 'spray' || n, '10.9.0.1', ARRAY[now() - interval '10 minutes'], now() - interval '10 minutes' FROM generate_series(1, 200) AS n",
    )
    await query(cloud_dsn, "INSERT INTO login_failures (username, client, failed_at, last_failed_at) VALUES ('recent', '10.9.0.2', ARRAY[now()], now())")

    assert (await api_log_in(first, clerk, "wrong password")).status_code == 401
    remaining = await query(cloud_dsn, "SELECT username, client, cardinality(failed_at) FROM login_failures ORDER BY username")
    assert remaining == [("recent", "10.9.0.2", 1), (clerk, "127.0.0.1", 1)]
