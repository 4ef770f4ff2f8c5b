"""A key registered after the agent signed with it: its validity start moves earlier, and the stuck vouchers are stored at the next resend.

Runs the ingest worker against real Mosquitto and PostgreSQL. A gateway
stand-in handles the cloud's resend requests as the agent does: it
publishes its vouchers again from the requested sequence on.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from litestar.testing import AsyncTestClient
from typer.testing import CliRunner

from valuegate.cli import app as cli_app
from valuegate.cloud import store
from valuegate.cloud.app import create_app
from valuegate.cloud.db import UTC_OPTIONS
from valuegate.cloud.ingest import IngestWorker
from valuegate.cloud.settings import CloudSettings
from valuegate.edge.protocol import voucher as v

from .conftest import Gateway, iso, make_user, register
from .mqtt_helpers import Probe
from .test_ingest import encode, query, wait_for_rows

pytestmark = [pytest.mark.postgres, pytest.mark.mosquitto]
runner = CliRunner()


@pytest.fixture
async def worker(cloud_dsn: str, mosquitto: Any) -> AsyncIterator[IngestWorker]:
    settings = CloudSettings(dsn=cloud_dsn, mqtt_port=mosquitto.port, share_group="valid-from", resend_interval_s=0.2)
    async with IngestWorker(settings) as running:
        yield running


def signed_at(gateway: Gateway, issued_at: dt.datetime) -> dict[str, Any]:
    """Sign the gateway's next voucher with ``issued_at`` as its issuing time."""
    seq = len(gateway.issued) + 1
    prev = v.voucher_hash(gateway.issued[-1]) if gateway.issued else None
    document = v.build_voucher(gateway.claims(seq, prev, issued_at=iso(issued_at)), gateway.key)
    gateway.issued.append(document)
    return document


async def answer_resends(probe: Probe, gateway: Gateway, answered: list[int]) -> None:
    """Publish the vouchers again from each requested sequence on, as the agent does, and append each from_seq handled to ``answered``."""
    seen = 0
    while True:
        requests = [body for topic, body in list(probe.received) if topic == gateway.topic("resend") and "from_seq" in body]
        for body in requests[seen:]:
            for document in gateway.issued[body["from_seq"] - 1 :]:
                await asyncio.to_thread(probe.publish, gateway.topic("vouchers"), encode(document))
            answered.append(body["from_seq"])
        seen = len(requests)
        await asyncio.sleep(0.05)


async def test_stuck_voucher_stored_after_move(cloud_dsn: str, worker: IngestWorker, probe: Probe) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    gateway = Gateway("acme", "plant1", "gw-late", Ed25519PrivateKey.generate())
    # The agent signed voucher 1 before the operator registered the key with the default start, now.
    early = signed_at(gateway, now - dt.timedelta(minutes=10))
    key_id = await register(cloud_dsn, "acme", "plant1", "gw-late", gateway.key, valid_from=None)
    late = signed_at(gateway, now + dt.timedelta(seconds=5))
    probe.publish(gateway.topic("vouchers"), encode(early))
    probe.publish(gateway.topic("vouchers"), encode(late))

    answered: list[int] = []
    stand_in = asyncio.create_task(answer_resends(probe, gateway, answered))
    try:
        # Until the start moves, the cloud requests sequence 1 again and again, and rejects it each time.
        deadline = asyncio.get_running_loop().time() + 10
        while answered.count(1) < 3 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        assert answered.count(1) >= 3
        rows = await query(cloud_dsn, "SELECT code, reason FROM rejections WHERE voucher_id = 'gw-late:1'")
        assert rows
        assert {code for code, _ in rows} == {"key_not_valid"}
        assert f"valuegate cloud admin key-valid-from -c cloud.yaml acme gw-late {key_id} CREATED" in rows[0][1]
        assert f"POST /api/v1/gateways/gw-late/keys/{key_id}/valid-from" in rows[0][1]
        assert await query(cloud_dsn, "SELECT contiguous_through FROM gateway_chain WHERE gateway_id = 'gw-late'") == [(0,)]

        moved = await asyncio.to_thread(
            runner.invoke, cli_app,
            ["cloud", "admin", "key-valid-from", "acme", "gw-late", str(key_id), iso(now - dt.timedelta(hours=1)), "--reason", "signed before registration",
             "--dsn", cloud_dsn],
        )  # fmt: skip
        assert moved.exit_code == 0, moved.output
        assert f"key {key_id} of gateway gw-late valid from" in moved.stdout

        stored = await wait_for_rows(cloud_dsn, "SELECT contiguous_through FROM gateway_chain WHERE gateway_id = 'gw-late' AND contiguous_through = 2", count=1)
        assert stored == [(2,)]
    finally:
        stand_in.cancel()
    assert await query(cloud_dsn, "SELECT voucher_id FROM vouchers ORDER BY seq") == [("gw-late:1",), ("gw-late:2",)]
    audit = await query(cloud_dsn, "SELECT actor, detail FROM audit_log WHERE action = 'key.valid_from'")
    assert len(audit) == 1
    assert audit[0][0] == "cli"
    assert audit[0][1]["reason"] == "signed before registration"
    assert audit[0][1]["previous_valid_from"] > audit[0][1]["valid_from"]


async def keys_of(dsn: str, gateway: str) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn, options=UTC_OPTIONS) as conn:
        return await (await conn.execute("SELECT id, valid_from FROM gateway_keys WHERE gateway_id = %s ORDER BY id", (gateway,))).fetchall()


async def test_move_only_earlier(cloud_dsn: str) -> None:
    start = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    key_id = await register(cloud_dsn, "acme", "plant1", "gw-m", Ed25519PrivateKey.generate(), valid_from=start)
    async with await psycopg.AsyncConnection.connect(cloud_dsn, options=UTC_OPTIONS) as conn:
        with pytest.raises(store.Invalid) as later:
            async with conn.transaction():
                await store.move_key_valid_from(conn, "acme", "gw-m", key_id, start + dt.timedelta(days=1))
        assert later.value.code == "invalid_validity"
        assert "can only move earlier" in str(later.value)
        with pytest.raises(store.Invalid) as naive:
            async with conn.transaction():
                await store.move_key_valid_from(conn, "acme", "gw-m", key_id, dt.datetime(2026, 5, 1))  # noqa: DTZ001 - the case under test
        assert naive.value.code == "naive_timestamp"
        with pytest.raises(store.NotFound):
            async with conn.transaction():
                await store.move_key_valid_from(conn, "globex", "gw-m", key_id, start - dt.timedelta(days=1))
        async with conn.transaction():
            same = await store.move_key_valid_from(conn, "acme", "gw-m", key_id, start)
        assert same["valid_from"] == start
        audits = await (await conn.execute("SELECT 1 FROM audit_log WHERE action = 'key.valid_from'")).fetchall()
        assert audits == []

        async with conn.transaction():
            await store.revoke_gateway_key(conn, "acme", "gw-m", key_id, "key leaked", force=True)
        with pytest.raises(store.Conflict) as revoked:
            async with conn.transaction():
                await store.move_key_valid_from(conn, "acme", "gw-m", key_id, start - dt.timedelta(days=1))
        assert revoked.value.code == "key_revoked"
    assert await keys_of(cloud_dsn, "gw-m") == [(key_id, start)]


async def test_api_moves_valid_from(cloud_dsn: str) -> None:
    start = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    key_id = await register(cloud_dsn, "acme", "plant1", "gw-api", Ed25519PrivateKey.generate(), valid_from=start)
    admin = {"Authorization": f"Bearer {await make_user(cloud_dsn, 'acme', 'ops', ['admin'])}"}
    csm = {"Authorization": f"Bearer {await make_user(cloud_dsn, 'acme', 'csm1', ['csm'])}"}
    path = f"/api/v1/gateways/gw-api/keys/{key_id}/valid-from"
    async with AsyncTestClient(create_app(CloudSettings(dsn=cloud_dsn)), base_url="https://testserver.local") as client:
        assert (await client.post(path, json={"valid_from": "2026-05-01T00:00:00Z"}, headers=csm)).status_code == 403
        later = await client.post(path, json={"valid_from": "2026-07-01T00:00:00Z"}, headers=admin)
        assert (later.status_code, later.json()["code"]) == (422, "invalid_validity")
        moved = await client.post(path, json={"valid_from": "2026-05-01T08:00:00+08:00", "reason": "agent ran first"}, headers=admin)
        assert moved.status_code == 200, moved.text
        assert dt.datetime.fromisoformat(moved.json()["valid_from"]) == dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
        missing = await client.post("/api/v1/gateways/gw-api/keys/999999/valid-from", json={"valid_from": "2026-05-01T00:00:00Z"}, headers=admin)
        assert missing.status_code == 404
        audit = (await client.get("/api/v1/audit", headers=admin)).json()
    (entry,) = [item for item in audit if item["action"] == "key.valid_from"]
    assert entry["detail"]["reason"] == "agent ran first"


def edge_key_file(tmp_path: Path, gateway: str = "gw-1") -> tuple[Path, dict[str, Any]]:
    """Create a gateway key with `valuegate keys new` and return the file `keys export-public` writes, with its content."""
    from tests.edge.helpers import write_config

    config = write_config(tmp_path, 1883)
    assert runner.invoke(cli_app, ["keys", "new", "--config", str(config)]).exit_code == 0
    exported = runner.invoke(cli_app, ["keys", "export-public", "--config", str(config)])
    assert exported.exit_code == 0, exported.output
    data = json.loads(exported.stdout)
    path = tmp_path / f"{gateway}.pub.json"
    path.write_text(exported.stdout, encoding="utf-8")
    return path, data


async def test_key_add_takes_created(cloud_dsn: str, tmp_path: Path) -> None:
    path, exported = edge_key_file(tmp_path)
    assert exported["tenant"] == "acme"
    assert exported["gateway"] == "gw-1"
    async with await psycopg.AsyncConnection.connect(cloud_dsn, options=UTC_OPTIONS) as conn:
        async with conn.transaction():
            await store.create_tenant(conn, "acme", "Acme")
            await store.create_site(conn, "acme", "suzhou", "Suzhou", "Asia/Shanghai")
            await store.create_gateway(conn, "acme", "suzhou", "gw-1")
            await store.create_gateway(conn, "acme", "suzhou", "gw-2")

    wrong = await asyncio.to_thread(runner.invoke, cli_app, ["cloud", "admin", "key-add", "acme", "gw-2", str(path), "--dsn", cloud_dsn])
    assert wrong.exit_code == 2
    assert f"{path} is the key of gateway 'gw-1', not 'gw-2'" in wrong.output
    absent = await asyncio.to_thread(runner.invoke, cli_app, ["cloud", "admin", "key-add", "acme", "gw-1", str(tmp_path / "gw-9.pub.json"), "--dsn", cloud_dsn])
    assert absent.exit_code == 2
    assert "not found; write it with `valuegate keys export-public" in absent.output

    added = await asyncio.to_thread(runner.invoke, cli_app, ["cloud", "admin", "key-add", "acme", "gw-1", str(path), "--dsn", cloud_dsn])
    assert added.exit_code == 0, added.output
    assert "note:" not in added.output
    ((key_id, valid_from),) = await keys_of(cloud_dsn, "gw-1")
    assert valid_from == dt.datetime.fromisoformat(exported["created"])
    assert f"key {key_id} registered for gateway gw-1, valid from {valid_from.isoformat()}" in added.stdout

    # Registering the same key again names the command that moves its start.
    again = await asyncio.to_thread(runner.invoke, cli_app, ["cloud", "admin", "key-add", "acme", "gw-1", exported["verification_method"], "--dsn", cloud_dsn])
    assert again.exit_code == 1
    assert f"as key {key_id}; move its start earlier with `valuegate cloud admin key-valid-from -c cloud.yaml acme gw-1 {key_id} INSTANT`" in again.output


async def test_bare_key_add_warns(cloud_dsn: str) -> None:
    key = Ed25519PrivateKey.generate()
    await register(cloud_dsn, "acme", "plant1", "gw-b", Ed25519PrivateKey.generate())
    from valuegate.edge.protocol.keys import public_key_multibase

    added = await asyncio.to_thread(runner.invoke, cli_app, ["cloud", "admin", "key-add", "acme", "gw-b", public_key_multibase(key.public_key()), "--dsn", cloud_dsn])
    assert added.exit_code == 0, added.output
    ((_, first), (key_id, _)) = await keys_of(cloud_dsn, "gw-b")
    assert first == dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    assert "note: vouchers the agent signed before now are rejected as key_not_valid" in added.stderr
    assert f"key-valid-from --dsn DSN acme gw-b {key_id} CREATED" in added.stderr
