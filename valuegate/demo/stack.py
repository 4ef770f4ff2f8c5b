"""Start the demo's parts in order: broker and database, cloud, simulators, edge agent; tear down in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import yaml

log = structlog.get_logger("valuegate.demo")

HERE = Path(__file__).resolve().parent
TENANT = "demo"
SITE = "demo-site"
GATEWAY = "gw-demo-01"
CONTRACTS = (HERE / "contract-bottling.yaml", HERE / "contract-machining.yaml")
# Plant time zones of the two recordings. The bottling data set does not
# name its zone; the plant is assumed to run on America/Sao_Paulo time.
FILLER = ("filler-01", "America/Sao_Paulo")
MAZAK = ("mazak-03", "America/New_York")
DEMO_USERS = {"csm": ["csm"], "finance": ["finance"], "auditor": ["auditor"], "admin": ["admin"]}


class DemoError(RuntimeError):
    """The demo cannot run with the given options; the message says what to change."""


@dataclass
class DemoOptions:
    """Settings of the demo: the recordings it replays and the servers it uses."""

    state_dir: Path
    """Folder for the edge spool and keys, the report and the exported documents."""
    bottling_days: int | None = None
    """Replay only the first N production days of the bottling line (all when None)."""
    mazak_days: int | None = None
    """Replay only the first N plant days of the Mazak recording (all when None)."""
    speed: float = 200_000.0
    """Recorded seconds replayed per real second, between state changes."""
    poll_ms: int = 10
    """Modbus poll period of the edge agent in milliseconds."""
    broker: tuple[str, int] | None = None
    """An MQTT broker to use instead of starting Mosquitto."""
    database: str | None = None
    """A PostgreSQL connection string to use instead of starting a throwaway cluster."""
    ingest_workers: int = 2
    """Ingest workers sharing one MQTT subscription."""
    contracts: tuple[Path, ...] = CONTRACTS
    """Contract files the edge measures and the cloud settles."""
    progress: Callable[[str], None] = lambda _message: None
    """Called with a short English line at each step."""


@dataclass
class DemoStack:
    """Handles on the running parts, for the report and for serving the web UI afterwards."""

    options: DemoOptions
    dsn: str = ""
    api_url: str = ""
    broker: tuple[str, int] = ("127.0.0.1", 0)
    passwords: dict[str, str] = field(default_factory=dict)
    token: str = ""
    agent: Any = None
    simulators: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    issued: int = 0


def _edge_config(options: DemoOptions, stack: DemoStack, modbus_port: int, opcua_endpoint: str) -> Path:
    """Write the demo's edge.yaml into the state folder and return its path."""
    state = options.state_dir / "edge"
    state.mkdir(parents=True, exist_ok=True)
    config = {
        "schema": "valuegate/edge/v1",
        "gateway": GATEWAY,
        "tenant": TENANT,
        "site": SITE,
        "time_zone": FILLER[1],
        "state_dir": str(state),
        "mqtt": {"host": stack.broker[0], "port": stack.broker[1], "keepalive_s": 30, "reconnect_min_s": 0.2, "reconnect_max_s": 2.0},
        "metrics": {"port": 0},
        "contracts": [str(path) for path in options.contracts],
        "devices": [
            {
                "id": FILLER[0],
                "protocol": "modbus",
                "host": "127.0.0.1",
                "port": modbus_port,
                "unit_id": 1,
                "tag_map": "demo/bottling-filler-modbus.yaml",
                "poll_ms": options.poll_ms,
                # The simulator moves on once a state was read. A response that
                # arrives after the client gave up is lost with its state, and
                # the demo shares its process with the cloud, so be patient.
                "timeout_ms": 10_000,
            },
            {"id": MAZAK[0], "protocol": "opcua", "endpoint": opcua_endpoint, "tag_map": "demo/mazak-mtconnect-opcua.yaml"},
        ],
        "machines": [{"device": FILLER[0], "time_zone": FILLER[1]}, {"device": MAZAK[0], "time_zone": MAZAK[1]}],
    }
    path = state / "edge.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


async def _register(stack: DemoStack, public_key: str) -> None:
    """Register the tenant, site, gateway key, contracts and demo users in the cloud."""
    import psycopg

    from valuegate.cloud.admin import Admin

    async with await psycopg.AsyncConnection.connect(stack.dsn) as conn:
        cur = await conn.execute("SELECT 1 FROM tenants WHERE id = %s", (TENANT,))
        if await cur.fetchone() is not None:
            msg = f"the database already holds the demo tenant {TENANT!r}; give --database an empty database or leave it out to use a throwaway one"
            raise DemoError(msg)
    async with Admin(stack.dsn, actor="demo") as admin:
        await admin.create_tenant(TENANT, "Demo vendor")
        await admin.create_site(TENANT, SITE, "Demo site", FILLER[1])
        await admin.create_gateway(TENANT, SITE, GATEWAY, "Demo gateway")
        await admin.add_key(TENANT, GATEWAY, public_key, valid_from=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
        for path in stack.options.contracts:
            await admin.upload_contract(TENANT, path)
        for username, roles in DEMO_USERS.items():
            password = secrets.token_urlsafe(9)
            await admin.create_user(TENANT, username, roles, password=password, display_name=username)
            stack.passwords[username] = password
        stack.token = await admin.issue_token(TENANT, "admin", "demo report")


async def _wait_for_cloud(stack: DemoStack, issued: int, *, timeout_s: float) -> None:
    """Wait until the cloud stores every issued voucher and has recomputed each one."""
    import psycopg

    deadline = time.monotonic() + timeout_s
    async with await psycopg.AsyncConnection.connect(stack.dsn, autocommit=True) as conn:
        while True:
            cur = await conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE reproduced IS NOT NULL) FROM voucher_chain WHERE gateway_id = %s", (GATEWAY,)
            )
            stored, judged = await cur.fetchone()  # type: ignore[misc]
            if stored >= issued and judged >= stored:
                return
            if time.monotonic() > deadline:
                log.warning("cloud_wait_timed_out", stored=stored, reproduced_or_not=judged, issued=issued)
                return
            await asyncio.sleep(0.2)


async def _wait_until_reading(agent: Any, devices: list[str], *, timeout_s: float) -> None:
    """Wait until the agent has read values from every device and reached the broker.

    The OPC UA simulator keeps no history, so the replay starts only once the
    agent's subscription has delivered its first values.
    """
    deadline = time.monotonic() + timeout_s
    metrics = agent.metrics
    while not (
        all(metrics.value("valuegate_values_read_total", device=device) > 0 for device in devices) and metrics.value("valuegate_mqtt_connected")
    ):
        if time.monotonic() > deadline:
            msg = f"the edge agent did not read from {', '.join(devices)} and reach the broker within {timeout_s:.0f} s; run with --verbose to see why"
            raise DemoError(msg)
        await asyncio.sleep(0.05)


async def _drain(agent: Any, end_ms: dict[str, int], *, timeout_s: float) -> None:
    """Wait until the agent has read each simulator's final PLC time, then until it is drained.

    The simulators stop their clocks past the end of the last plant day; once
    a machine's watermark reaches that instant every day is closable, so a
    drained agent has issued and delivered its last voucher.
    """
    from valuegate.edge.spool import Spool

    deadline = time.monotonic() + timeout_s
    for machine, end in end_ms.items():
        while (await agent.spool.call(Spool.progress, machine)).watermark_ms < end:
            if time.monotonic() > deadline:
                msg = f"the edge agent did not read the end of the replay of {machine} within {timeout_s:.0f} s; run with --verbose to see why"
                raise DemoError(msg)
            await asyncio.sleep(0.05)
    await agent.drained()


@contextlib.asynccontextmanager
async def running_stack(options: DemoOptions) -> AsyncIterator[DemoStack]:
    """Run the whole chain for the block: the replay is finished and drained when the block starts."""
    from valuegate.cloud.app import ApiServer
    from valuegate.cloud.db import migrate
    from valuegate.cloud.ingest import IngestWorker
    from valuegate.cloud.settings import load_settings
    from valuegate.edge import keys as edge_keys
    from valuegate.edge.agent import EdgeAgent, running
    from valuegate.edge.config import load_config
    from valuegate.services import MosquittoServer, PostgresServer
    from valuegate.simulators.modbus_line import BottlingModbusSimulator
    from valuegate.simulators.mtconnect_opcua import MtconnectOpcUaSimulator

    stack = DemoStack(options)
    say = options.progress
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as exits:
        if options.broker is None:
            broker = await asyncio.to_thread(MosquittoServer().start)
            exits.callback(broker.stop)
            stack.broker = ("127.0.0.1", broker.port)
            say(f"started Mosquitto on 127.0.0.1:{broker.port} (pid {broker.pid})")
        else:
            stack.broker = options.broker
        if options.database is None:
            database = await asyncio.to_thread(PostgresServer().start)
            exits.callback(database.stop)
            stack.dsn = database.dsn
            say(f"started PostgreSQL on 127.0.0.1:{database.port} (pid {database.pid}, TimescaleDB {'on' if database.timescaledb else 'not installed'})")
        else:
            stack.dsn = options.database
        await asyncio.to_thread(migrate, stack.dsn)

        key_dir = options.state_dir / "edge" / "keys"
        key = edge_keys.load_signing_key(key_dir) if (key_dir / "gateway.key").exists() else edge_keys.create_key(key_dir)
        await _register(stack, key.verification_method)

        # The demo replays history, so renewal triggers are evaluated on the day after each
        # reporting period (valuegate.demo.settle), not by the app's clock-driven check.
        settings = load_settings(
            environ={},
            dsn=stack.dsn,
            mqtt_host=stack.broker[0],
            mqtt_port=stack.broker[1],
            cookie_secure=False,
            port=0,
            host="127.0.0.1",
            renewal_check_interval_s=0,
        )
        for number in range(options.ingest_workers):
            await exits.enter_async_context(IngestWorker(settings, name=f"demo-ingest-{number + 1}"))
        api = await exits.enter_async_context(ApiServer(settings))
        stack.api_url = api.url
        say(f"cloud API and web UI at {api.url}; {options.ingest_workers} ingest workers share one subscription")

        bottling = await exits.enter_async_context(
            BottlingModbusSimulator(port=0, speed=options.speed, hold_until_read=True, tick_ms=5, days=options.bottling_days, paused=True)
        )
        mazak = await exits.enter_async_context(MtconnectOpcUaSimulator("mazak03", port=0, speed=options.speed, days=options.mazak_days, paused=True))
        stack.simulators = {FILLER[0]: bottling, MAZAK[0]: mazak}
        say(f"bottling line on Modbus TCP 127.0.0.1:{bottling.port}; Mazak03 on {mazak.endpoint}")

        config = load_config(_edge_config(options, stack, bottling.port, mazak.endpoint))
        agent = await exits.enter_async_context(EdgeAgent(config))
        stack.agent = agent
        stack.timings["start_s"] = time.monotonic() - started
        async with running(agent):
            await _wait_until_reading(agent, [FILLER[0], MAZAK[0]], timeout_s=60)
            replay_started = time.monotonic()
            bottling.resume()
            mazak.resume()
            say("replaying the recordings")
            await asyncio.gather(bottling.finished.wait(), mazak.finished.wait())
            stack.timings["replay_s"] = time.monotonic() - replay_started
            say("replay finished; waiting until every voucher is acknowledged")
            await _drain(agent, {FILLER[0]: bottling.clock.end_ms, MAZAK[0]: mazak.clock.end_ms}, timeout_s=120)
            stack.timings["drain_s"] = time.monotonic() - replay_started - stack.timings["replay_s"]
        from valuegate.edge.outbox import chain_head

        issued = (await agent.spool.call(chain_head)).next_seq - 1
        stack.issued = issued
        await _wait_for_cloud(stack, issued, timeout_s=60)
        stack.timings["total_s"] = time.monotonic() - started
        yield stack
