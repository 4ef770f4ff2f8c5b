"""A migrated database holding a tenant, a gateway with its key, contract C-1 and vouchers stored by the real ingest path."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from typing import Any

import msgspec
import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from valuegate.cloud import store
from valuegate.cloud.chain import load_gateways, store_vouchers
from valuegate.cloud.db import UTC_OPTIONS, migrate, refresh_machine_day
from valuegate.cloud.verify import Topic, check_voucher
from valuegate.edge.protocol.contract import Contract
from valuegate.edge.protocol.keys import public_key_multibase

KEY_VALID_FROM = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


async def connect(dsn: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(dsn, options=UTC_OPTIONS, autocommit=True)


async def seed(dsn: str, contract: Contract, key: Ed25519PrivateKey, *, tenant: str = "acme", gateway: str = "gw-1") -> None:
    """Migrate ``dsn`` and register the tenant, site plant-1, the gateway, its key and ``contract``."""
    migrate(dsn)
    async with await connect(dsn) as conn, conn.transaction():
        await store.create_tenant(conn, tenant, tenant.upper())
        await store.create_site(conn, tenant, "plant-1", "Plant 1", "UTC")
        await store.create_gateway(conn, tenant, "plant-1", gateway)
        await store.add_gateway_key(conn, tenant, gateway, public_key_multibase(key.public_key()), valid_from=KEY_VALID_FROM)
        await save_contract(conn, contract)


async def save_contract(conn: psycopg.AsyncConnection[Any], contract: Contract, *, revision: int = 1) -> None:
    document = msgspec.to_builtins(contract)
    source = json.dumps(document, sort_keys=True)
    await conn.execute(
        "INSERT INTO contracts (tenant_id, id, revision, source, document, sha256, uploaded_by) VALUES (%s, %s, %s, %s, %s, %s, 'test')",
        (contract.tenant, contract.id, revision, source, psycopg.types.json.Jsonb(document), hashlib.sha256(source.encode()).hexdigest()),
    )


async def ingest(dsn: str, documents: Sequence[dict[str, Any]], *, site: str = "plant-1") -> list[str]:
    """Check and store signed vouchers the way the ingest workers do; return the stored voucher ids."""
    async with await connect(dsn) as conn, conn.transaction():
        gateways = await load_gateways(conn, {d["credentialSubject"]["gateway"] for d in documents})
        items = []
        for document in documents:
            claims = document["credentialSubject"]
            topic = Topic(claims["tenant"], site, claims["gateway"], "vouchers")
            payload = json.dumps(document).encode("utf-8")
            items.append(check_voucher(payload, topic, gateways, now=dt.datetime.now(dt.UTC), clock_skew=dt.timedelta(minutes=5)))
        result = await store_vouchers(conn, items, gateways)
    assert not result.rejected, result.rejected
    return result.stored


async def ingest_telemetry(dsn: str, records: Sequence[Any], *, tenant: str = "acme", site: str = "plant-1", gateway: str = "gw-1") -> int:
    """Check and store minute records as one telemetry batch, the way the ingest workers do."""
    from valuegate.cloud.telemetry import check_batch, store_batches
    from valuegate.edge.protocol.records import TELEMETRY_SCHEMA, TelemetryBatch

    payload = msgspec.json.encode(TelemetryBatch(schema=TELEMETRY_SCHEMA, tenant=tenant, site=site, gateway=gateway, records=list(records)))
    async with await connect(dsn) as conn, conn.transaction():
        gateways = await load_gateways(conn, {gateway})
        batch = check_batch(payload, Topic(tenant, site, gateway, "telemetry"), gateways)
        stored = await store_batches(conn, [batch])
    async with await connect(dsn) as conn:
        await refresh_machine_day(conn)
    return stored
