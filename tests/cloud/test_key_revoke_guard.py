"""Revoking a key is refused while the gateway may still sign with it or vouchers it signed are not stored.

A revocation rejects every later-arriving voucher of the key, so revoking too
early strands those sequences for good. Vouchers are stored directly in a real
PostgreSQL as a worker stores them. The numbers in the messages are counted by
hand from the sequences that each case stores.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from valuegate.cli import app as cli_app
from valuegate.cloud import store
from valuegate.cloud.db import UTC_OPTIONS
from valuegate.edge.protocol import voucher as v
from valuegate.edge.protocol.keyrotation import build_rotation
from valuegate.edge.protocol.keys import public_key_multibase

from .conftest import Gateway, register, store_direct
from .test_ingest import query

pytestmark = pytest.mark.postgres
runner = CliRunner()


def signed(gateway: Gateway, key: Ed25519PrivateKey, count: int) -> list[dict[str, Any]]:
    """Issue ``count`` more chained vouchers of ``gateway`` signed with ``key``."""
    out = []
    for _ in range(count):
        seq = len(gateway.issued) + 1
        prev = v.voucher_hash(gateway.issued[-1]) if gateway.issued else None
        document = v.build_voucher(gateway.claims(seq, prev), key)
        gateway.issued.append(document)
        out.append(document)
    return out


async def revoke(dsn: str, gateway: str, key_id: int, *, force: bool = False) -> dict[str, Any]:
    async with await psycopg.AsyncConnection.connect(dsn, options=UTC_OPTIONS) as conn:
        async with conn.transaction():
            return await store.revoke_gateway_key(conn, "acme", gateway, key_id, "replaced", force=force)


async def add_key(dsn: str, gateway: str, key: Ed25519PrivateKey) -> int:
    async with await psycopg.AsyncConnection.connect(dsn, options=UTC_OPTIONS) as conn:
        async with conn.transaction():
            row = await store.add_gateway_key(conn, "acme", gateway, public_key_multibase(key.public_key()), valid_from=dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
    return int(row["id"])


async def test_rotated_key_revoke_waits_for_its_sequences(cloud_dsn: str) -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    gw = Gateway("acme", "plant1", "gw-r", old)
    old_id = await register(cloud_dsn, "acme", "plant1", "gw-r", old)
    statement = build_rotation(old, new, tenant="acme", site="plant1", gateway="gw-r", from_seq=4, created="2026-03-01T00:00:00Z")
    async with await psycopg.AsyncConnection.connect(cloud_dsn, options=UTC_OPTIONS) as conn:
        async with conn.transaction():
            await store.register_rotation(conn, "acme", "gw-r", statement)
    first_three = signed(gw, old, 3)
    assert (await store_direct(cloud_dsn, first_three[:2], topic_of=gw)).stored == ["gw-r:1", "gw-r:2"]

    # The old key signs 1..3; seq 3 is still in the gateway's outbox.
    with pytest.raises(store.Conflict) as refused:
        await revoke(cloud_dsn, "gw-r", old_id)
    assert refused.value.code == "key_signed_unstored"
    assert f"key {old_id} signed the sequences of gateway 'gw-r' up to 3, and 1 of them are not stored (the first is 3)" in str(refused.value)
    assert await query(cloud_dsn, f"SELECT revoked_at FROM gateway_keys WHERE id = {old_id}") == [(None,)]
    assert await query(cloud_dsn, "SELECT 1 FROM audit_log WHERE action = 'key.revoke'") == []

    assert (await store_direct(cloud_dsn, first_three[2:], topic_of=gw)).stored == ["gw-r:3"]
    row = await revoke(cloud_dsn, "gw-r", old_id)
    assert row["revoked_at"] is not None
    (detail,) = (d for (d,) in await query(cloud_dsn, "SELECT detail FROM audit_log WHERE action = 'key.revoke'"))
    assert detail == {"reason": "replaced", "forced": False, "last_seq": 3, "unstored": 0}
    # The new key keeps signing.
    assert (await store_direct(cloud_dsn, signed(gw, new, 1), topic_of=gw)).stored == ["gw-r:4"]


async def test_lost_key_ends_before_replacement(cloud_dsn: str) -> None:
    lost, replacement, spare = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    gw = Gateway("acme", "plant1", "gw-l", lost)
    lost_id = await register(cloud_dsn, "acme", "plant1", "gw-l", lost)
    by_lost = signed(gw, lost, 4)
    # Seq 2 and 4 never arrived; seq 3 did, so the lost key's latest stored voucher is 3.
    await store_direct(cloud_dsn, [by_lost[0], by_lost[2]], topic_of=gw)

    with pytest.raises(store.Conflict) as in_use:
        await revoke(cloud_dsn, "gw-l", lost_id)
    assert in_use.value.code == "key_in_use"
    assert "its latest stored voucher (seq 3) is signed with it" in str(in_use.value)

    replacement_id = await add_key(cloud_dsn, "gw-l", replacement)
    assert (await store_direct(cloud_dsn, signed(gw, replacement, 2), topic_of=gw)).stored == ["gw-l:5", "gw-l:6"]
    # The replacement's first stored voucher is 5, so the lost key ends at 4: seq 2 and 4 are missing.
    with pytest.raises(store.Conflict) as unstored:
        await revoke(cloud_dsn, "gw-l", lost_id)
    assert unstored.value.code == "key_signed_unstored"
    assert "up to 4, and 2 of them are not stored (the first is 2)" in str(unstored.value)

    # A registered key that never signed anything can go at once.
    spare_id = await add_key(cloud_dsn, "gw-l", spare)
    assert (await revoke(cloud_dsn, "gw-l", spare_id))["revoked_at"] is not None

    # A key that may have been copied is revoked anyway; the audit record counts what that stranded.
    assert (await revoke(cloud_dsn, "gw-l", lost_id, force=True))["revoked_at"] is not None
    details = await query(cloud_dsn, "SELECT object_id, detail FROM audit_log WHERE action = 'key.revoke' ORDER BY id")
    assert details == [
        (str(spare_id), {"reason": "replaced", "forced": False, "last_seq": 0, "unstored": 0}),
        (str(lost_id), {"reason": "replaced", "forced": True, "last_seq": 4, "unstored": 2}),
    ]
    assert await query(cloud_dsn, f"SELECT revoked_at IS NULL FROM gateway_keys WHERE id = {replacement_id}") == [(True,)]


async def test_cli_refuses_then_forces(cloud_dsn: str) -> None:
    key = Ed25519PrivateKey.generate()
    key_id = await register(cloud_dsn, "acme", "plant1", "gw-c", key)
    base = ["cloud", "admin", "key-revoke", "acme", "gw-c", str(key_id), "--reason", "gateway replaced", "--dsn", cloud_dsn]

    refused = await asyncio.to_thread(runner.invoke, cli_app, base)
    assert refused.exit_code == 1
    assert "no voucher of it is stored yet" in refused.output
    assert "revoke at once with --force" in refused.output
    assert await query(cloud_dsn, f"SELECT revoked_at FROM gateway_keys WHERE id = {key_id}") == [(None,)]

    forced = await asyncio.to_thread(runner.invoke, cli_app, [*base, "--force"])
    assert forced.exit_code == 0, forced.output
    assert f"key {key_id} of gateway gw-c revoked" in forced.stdout


async def test_cli_blank_reason_and_repeat(cloud_dsn: str) -> None:
    key_id = await register(cloud_dsn, "acme", "plant1", "gw-d", Ed25519PrivateKey.generate())
    base = ["cloud", "admin", "key-revoke", "acme", "gw-d", str(key_id), "--force", "--dsn", cloud_dsn]
    blank = await asyncio.to_thread(runner.invoke, cli_app, [*base, "--reason", "   "])
    assert blank.exit_code == 1
    assert "revoking a key needs a reason for the audit log" in blank.output
    assert await query(cloud_dsn, f"SELECT revoked_at FROM gateway_keys WHERE id = {key_id}") == [(None,)]
    assert (await asyncio.to_thread(runner.invoke, cli_app, [*base, "--reason", "copied"])).exit_code == 0
    again = await asyncio.to_thread(runner.invoke, cli_app, [*base, "--reason", "copied"])
    assert again.exit_code == 0
    assert f"key {key_id} of gateway gw-d was already revoked at " in again.stdout
    assert await query(cloud_dsn, "SELECT count(*) FROM audit_log WHERE action = 'key.revoke'") == [(1,)]
