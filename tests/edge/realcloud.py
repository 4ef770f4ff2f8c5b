"""The product's ingest worker on PostgreSQL for the edge tests: gateway registration and reads of what it stored."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import psycopg

from valuegate.cloud import db, store
from valuegate.cloud.ingest import IngestWorker
from valuegate.cloud.settings import CloudSettings

from .helpers import GATEWAY, SITE, TENANT


async def register(dsn: str, public_key: str) -> None:
    """Register the test tenant, site and gateway with the gateway's key, as an operator does before the first voucher."""
    async with await psycopg.AsyncConnection.connect(dsn, options=db.UTC_OPTIONS) as conn:
        async with conn.transaction():
            await store.create_tenant(conn, TENANT, "Acme")
            await store.create_site(conn, TENANT, SITE, "Suzhou plant", "UTC")
            await store.create_gateway(conn, TENANT, SITE, GATEWAY)
            await store.add_gateway_key(conn, TENANT, GATEWAY, public_key, valid_from=dt.datetime(2025, 1, 1, tzinfo=dt.UTC))


async def fetch(dsn: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn, options=db.UTC_OPTIONS) as conn:
        return await (await conn.execute(query, params)).fetchall()


async def stored(dsn: str) -> list[tuple[int, str]]:
    return await fetch(dsn, "SELECT seq, voucher_id FROM vouchers ORDER BY seq")


async def stored_documents(dsn: str) -> list[dict[str, Any]]:
    """Return the stored vouchers in sequence order, parsed from the bytes the ingest kept."""
    rows = await fetch(dsn, "SELECT document::text FROM vouchers ORDER BY seq")
    return [json.loads(text) for (text,) in rows]


async def rejections(dsn: str) -> list[tuple[str, str]]:
    return await fetch(dsn, "SELECT code, reason FROM rejections")


async def contiguous_through(dsn: str) -> int:
    rows = await fetch(dsn, "SELECT contiguous_through FROM gateway_chain WHERE gateway_id = %s", GATEWAY)
    return int(rows[0][0]) if rows else 0


def worker(dsn: str, port: int, **settings: Any) -> IngestWorker:
    return IngestWorker(CloudSettings(dsn=dsn, mqtt_port=port, share_group="edge-tests", resend_interval_s=0.2, **settings))
