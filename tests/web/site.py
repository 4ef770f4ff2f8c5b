"""A running cloud service for web tests: a seeded PostgreSQL database and the app under uvicorn on a free loopback port."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import msgspec
import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.factories import make_claims, minute_records, voucher_chain
from tests.settlement.seed import connect, ingest, ingest_telemetry, save_contract, seed
from tests.verify.bundles import oee_contract
from valuegate.cloud import auth, store
from valuegate.edge.protocol import voucher as v
from valuegate.services import ServiceError, free_port, wait_for_port

PASSWORD = "correct-horse-battery"
USERS = {"csm1": ["csm"], "fin1": ["finance"], "aud1": ["auditor"], "adm1": ["admin"]}
TRIGGERS = [{"kind": "target_met"}, {"kind": "days_before_end", "days": 30}]


@dataclass(frozen=True, slots=True)
class Site:
    """The service under test: its base URL and database."""

    url: str
    dsn: str
    key: Ed25519PrivateKey
    last_voucher: dict


def _jam(machine: str, day: dt.date, stop_ms: int, reason: str):
    start = dt.datetime.combine(day, dt.time(8), tzinfo=dt.UTC)
    return [msgspec.structs.replace(r, reasons={reason: stop_ms}) for r in minute_records(machine, start, 30, running_ms=60_000 - stop_ms, stop_ms=stop_ms)]


async def _fill(dsn: str) -> tuple[Ed25519PrivateKey, dict]:
    """Tenant acme: contract C-1 with 20 days of 1.5 OEE points, one day with too little data, telemetry; tenant globex apart."""
    key = Ed25519PrivateKey.generate()
    await seed(dsn, oee_contract(triggers=TRIGGERS, anchor={"scope": ["m-1", "m-2"]}, title={"zh-CN": "一号线服务合同", "en": "Line 1 service contract"}), key)
    chain = voucher_chain(key, 20)
    thin = make_claims(seq=21, prev=v.voucher_hash(chain[-1]), plant_date=dt.date(2024, 5, 26), point=0.0, low=0.0, high=0.0)
    thin = msgspec.structs.replace(thin, sufficiency=v.Sufficiency(ok=False, reasons=["planned_busy_below_minimum"], covered_min=12.0))
    chain.append(v.build_voucher(thin, key))
    await ingest(dsn, chain)
    records = _jam("m-1", dt.date(2024, 4, 3), 20_000, "jam") + _jam("m-1", dt.date(2024, 5, 7), 5_000, "jam")
    records += _jam("m-2", dt.date(2024, 5, 7), 15_000, "starved") + _jam("m-2", dt.date(2024, 5, 8), 9_000, "jam")
    await ingest_telemetry(dsn, records)

    async with await connect(dsn) as conn, conn.transaction():
        for username, roles in USERS.items():
            await auth.create_user(conn, "acme", username, PASSWORD, roles)
        await store.create_tenant(conn, "globex", "Globex")
        await auth.create_user(conn, "globex", "globex-csm", PASSWORD, ["csm"])
        await save_contract(conn, oee_contract().__class__(**{**msgspec.structs.asdict(oee_contract()), "id": "G-1", "tenant": "globex"}))
    return key, chain[-1]


# The app exactly as `valuegate cloud serve` runs it (settings from VALUEGATE_CLOUD_*, uvicorn),
# started without the root command line so that these tests depend only on the cloud layer.
_SERVE = """
import sys, uvicorn
from valuegate.cloud.app import create_app
from valuegate.cloud.settings import load_settings
settings = load_settings(host="127.0.0.1", port=int(sys.argv[1]))
uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None, access_log=False)
"""


@contextmanager
def running_site(postgres_server, environment: dict[str, str] | None = None) -> Iterator[Site]:
    """Create and fill a database, serve the app from it in a child process, and stop that process by its PID afterwards.

    ``environment`` adds or replaces VALUEGATE_CLOUD_* settings of the served app.
    """
    name = "web_" + uuid.uuid4().hex[:10]
    admin = f"postgresql://{postgres_server.user}@127.0.0.1:{postgres_server.port}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = f"postgresql://{postgres_server.user}@127.0.0.1:{postgres_server.port}/{name}"
    # A thread of its own, because Playwright's sync API may already run an event loop in this one.
    with ThreadPoolExecutor(max_workers=1) as executor:
        key, last_voucher = executor.submit(asyncio.run, _fill(dsn)).result()

    port = free_port()
    # The periodic renewal check is off, so that tests decide when packages are built.
    # Webhooks may reach every address, because the tests deliver to receivers on loopback and save example host names
    # that must not be looked up in DNS; tests/web/test_webhook_targets.py serves the default instead.
    env = {**os.environ, "VALUEGATE_CLOUD_COOKIE_SECURE": "false", "VALUEGATE_CLOUD_DSN": dsn, "VALUEGATE_CLOUD_RENEWAL_CHECK_INTERVAL_S": "0",
           "VALUEGATE_CLOUD_WEBHOOK_ALLOWED_NETWORKS": "0.0.0.0/0,::/0", **(environment or {})}
    command = [sys.executable, "-c", _SERVE, str(port)]
    # The server logs to a file: a pipe that is never read fills up after a few long tracebacks and then blocks the server.
    output = tempfile.TemporaryFile()
    process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, timeout_s=60, process=process, what="the cloud app under uvicorn")
        yield Site(f"http://127.0.0.1:{port}", dsn, key, last_voucher)
    except ServiceError:
        process.kill()
        output.seek(0)
        print(output.read().decode(errors="replace"))
        raise
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        output.close()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
