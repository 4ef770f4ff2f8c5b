"""One ingest batch mixing good and bad vouchers: exactly the good ones are stored, each bad one is rejected with its reason."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import psycopg
import pytest

from valuegate.cloud import db
from valuegate.cloud.chain import ChainPosition, load_gateways, store_vouchers
from valuegate.cloud.ingest import IngestWorker, _Message
from valuegate.cloud.settings import CloudSettings
from valuegate.cloud.verify import parse_topic, precheck_voucher
from valuegate.edge.protocol import voucher as v

from .conftest import Gateway

pytestmark = [pytest.mark.postgres]


@pytest.fixture
async def worker(cloud_dsn: str) -> AsyncIterator[IngestWorker]:
    # Without a broker, process() checks, stores and commits, and sends no acknowledgements.
    pool = await db.open_pool(cloud_dsn, min_size=1, max_size=2)
    try:
        yield IngestWorker(CloudSettings(dsn=cloud_dsn), pool=pool)
    finally:
        await pool.close()


async def query(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn, options=db.UTC_OPTIONS) as conn:
        return await (await conn.execute(sql)).fetchall()


def message(gateway: Gateway, document: dict[str, Any] | bytes) -> _Message:
    payload = document if isinstance(document, bytes) else msgspec.json.encode(document)
    return _Message(gateway.topic("vouchers"), payload, 0, 0)


def tampered(document: dict[str, Any]) -> bytes:
    payload = msgspec.json.encode(document)
    changed = payload.replace(b'"point":3.5', b'"point":4.5', 1)
    assert changed != payload
    return changed


async def test_mixed_batch_stores_only_good_vouchers(two_tenants: tuple[Gateway, Gateway], worker: IngestWorker, cloud_dsn: str) -> None:
    acme, globex = two_tenants
    first, second = acme.next_voucher(), acme.next_voucher()
    await worker.process([message(acme, first), message(acme, second)])

    third, fourth, fifth = acme.next_voucher(), acme.next_voucher(), acme.next_voucher()
    acme.next_voucher()  # seq 6 is never sent: seq 7 arrives after a gap
    seventh = acme.next_voucher()
    fork = v.build_voucher(acme.claims(1, None, point=7.0), acme.key)
    # Indented, with non-ASCII text: the stored document must keep these bytes.
    reason = v.Sufficiency(ok=True, reasons=["班次记录齐全 shift records complete"], covered_min=1380.0)
    spaced = json.dumps(globex.next_voucher(sufficiency=reason), indent=1, ensure_ascii=False).encode()
    wrong_link = v.build_voucher(acme.claims(5, "sha256:" + "11" * 32), acme.key)
    batch = [
        message(acme, third),
        message(acme, second),  # the same voucher again: a duplicate, neither stored twice nor rejected
        message(acme, fork),  # other content at stored seq 1
        message(acme, tampered(fourth)),  # seq 4 with a changed byte: the signature fails and seq 4 stays free
        message(acme, fourth),
        message(acme, wrong_link),  # seq 5 naming a prev that is not seq 4's hash
        message(acme, fifth),
        message(acme, seventh),
        message(globex, spaced),
        message(globex, tampered(globex.next_voucher())),
    ]
    positions = await worker.process(batch)

    assert positions == {"gw-a1": ChainPosition("gw-a1", 5, 7), "gw-g1": ChainPosition("gw-g1", 1, 1)}
    stored = await query(cloud_dsn, "SELECT gateway_id, seq, hash FROM voucher_chain ORDER BY gateway_id, seq")
    good = {("gw-a1", d["credentialSubject"]["seq"]): v.voucher_hash(d) for d in (first, second, third, fourth, fifth, seventh)}
    good[("gw-g1", 1)] = v.voucher_hash(globex.issued[0])
    assert {(gid, seq): digest for gid, seq, digest in stored} == good
    documents = await query(cloud_dsn, "SELECT voucher_id, delta_point FROM vouchers ORDER BY voucher_id")
    assert [(vid, str(point)) for vid, point in documents] == sorted((f"{gid}:{seq}", "3.5") for gid, seq in good)
    texts = dict(await query(cloud_dsn, "SELECT voucher_id, document::text FROM vouchers WHERE voucher_id IN ('gw-a1:3', 'gw-g1:1')"))
    assert texts == {"gw-a1:3": msgspec.json.encode(third).decode(), "gw-g1:1": spaced.decode()}
    rejections = await query(cloud_dsn, "SELECT voucher_id, code FROM rejections ORDER BY voucher_id, code")
    assert rejections == [("gw-a1:1", "fork"), ("gw-a1:4", "signature_invalid"), ("gw-a1:5", "chain_mismatch"), ("gw-g1:2", "signature_invalid")]

    # The missing seq 6 closes the gap, and the position moves over the stored seq 7.
    assert await worker.process([message(acme, acme.issued[5])]) == {"gw-a1": ChainPosition("gw-a1", 7, 7)}


async def test_failure_while_streaming_rows_stores_nothing(two_tenants: tuple[Gateway, Gateway], cloud_dsn: str) -> None:
    acme, _ = two_tenants
    topic = parse_topic(acme.topic("vouchers"))

    class Exploding:
        claims = v.parse_voucher(msgspec.json.encode(acme.next_voucher()))[1]

        def check(self) -> Any:
            raise RuntimeError("verifier crashed")

    async with await psycopg.AsyncConnection.connect(cloud_dsn, options=db.UTC_OPTIONS) as conn:
        gateways = await load_gateways(conn, {acme.gateway})
        now = dt.datetime.now(dt.UTC)
        good = [precheck_voucher(msgspec.json.encode(acme.next_voucher()), topic, gateways, now=now, clock_skew=dt.timedelta(minutes=5)) for _ in range(3)]
        with pytest.raises(RuntimeError, match="verifier crashed"):
            async with conn.transaction():
                # Rows of the first three vouchers are already on their way to the server when the fourth fails.
                await store_vouchers(conn, [*good, Exploding()], gateways)  # type: ignore[list-item]
    assert await query(cloud_dsn, "SELECT count(*) FROM vouchers") == [(0,)]
    assert await query(cloud_dsn, "SELECT count(*) FROM voucher_chain") == [(0,)]
