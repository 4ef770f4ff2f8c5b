"""Invoice runs bill verified vouchers only: a voucher beyond a chain gap, one whose re-computation disagrees and a rejected one stay out."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.factories import make_claims, voucher_chain
from tests.settlement.seed import connect, ingest, seed
from tests.verify.bundles import MAY, oee_contract
from valuegate.cloud.chain import load_gateways, store_vouchers
from valuegate.cloud.settlement import store as settlement
from valuegate.cloud.verify import Topic, VoucherError, check_voucher
from valuegate.edge.protocol import voucher as v

pytestmark = pytest.mark.postgres


async def submit(dsn: str, document: dict[str, Any]) -> str:
    """Check and store one voucher as the ingest does; return ``stored`` or the rejection code."""
    claims = document["credentialSubject"]
    topic = Topic(claims["tenant"], "plant-1", claims["gateway"], "vouchers")
    async with await connect(dsn) as conn, conn.transaction():
        gateways = await load_gateways(conn, {claims["gateway"]})
        try:
            item = check_voucher(json.dumps(document).encode(), topic, gateways, now=dt.datetime.now(dt.UTC), clock_skew=dt.timedelta(minutes=5))
        except VoucherError as exc:
            return exc.code
        result = await store_vouchers(conn, [item], gateways)
    if result.rejected:
        return result.rejected[0].code
    return "stored"


async def may_invoice(dsn: str) -> dict[str, Any]:
    async with await connect(dsn) as conn:
        run = await settlement.run_invoice(conn, "acme", "C-1", MAY, actor="fin")
        (document,) = await settlement.run_documents(conn, "acme", run["id"])
    return document


@pytest.fixture
async def chain(database):
    """Vouchers 1-6 (6-11 May) of gateway gw-1: 1-5 at 1.5 OEE points, 6 at 2.0 points."""
    key = Ed25519PrivateKey.generate()
    await seed(database, oee_contract(), key)
    documents = voucher_chain(key, 5)
    documents.append(v.build_voucher(make_claims(seq=6, prev=v.voucher_hash(documents[-1]), plant_date=dt.date(2024, 5, 11), point=2.0), key))
    assert await ingest(database, documents) == [f"gw-1:{n}" for n in range(1, 7)]
    return database, key, documents


async def test_all_verified_vouchers_bill(chain):
    dsn, _, _ = chain
    document = await may_invoice(dsn)
    (line,) = document["record"]["lines"]
    assert line["voucher_ids"] == [f"gw-1:{n}" for n in range(1, 7)]
    # 5 days x 1.5 points x 2,000 CNY + 2.0 points x 2,000 CNY = 15,000 + 4,000.
    assert document["total"] == Decimal("19000.00")


async def test_only_verified_vouchers_bill(chain):
    dsn, key, documents = chain

    # Gap: voucher 8 (13 May, 3.0 points) arrives while voucher 7 does not.
    seven = v.build_voucher(make_claims(seq=7, prev=v.voucher_hash(documents[-1]), plant_date=dt.date(2024, 5, 12), point=1.0), key)
    eight = v.build_voucher(make_claims(seq=8, prev=v.voucher_hash(seven), plant_date=dt.date(2024, 5, 13), point=3.0), key)
    assert await submit(dsn, eight) == "stored"

    # Rejected: voucher 7 signed by an unregistered key, voucher 7 changed after signing, and a fork of voucher 4.
    foreign = v.build_voucher(make_claims(seq=7, prev=v.voucher_hash(documents[-1]), plant_date=dt.date(2024, 5, 12), point=5.0), Ed25519PrivateKey.generate())
    assert await submit(dsn, foreign) == "key_unknown"
    tampered = json.loads(json.dumps(seven))
    tampered["credentialSubject"]["delta"]["point"] = 5.0
    assert await submit(dsn, tampered) == "signature_invalid"
    fork = v.build_voucher(make_claims(seq=4, prev=v.voucher_hash(documents[2]), plant_date=dt.date(2024, 5, 9), point=9.0), key)
    assert await submit(dsn, fork) == "fork"

    # Re-computation: voucher 2 disagrees with the stored telemetry (mismatch), voucher 3 agrees (reproduced).
    async with await connect(dsn) as conn:
        await conn.execute("UPDATE voucher_chain SET reproduced = false, reproduce_detail = 'oee differs' WHERE voucher_id = 'gw-1:2'")
        await conn.execute("UPDATE voucher_chain SET reproduced = true WHERE voucher_id = 'gw-1:3'")

    document = await may_invoice(dsn)
    (line,) = document["record"]["lines"]
    assert line["voucher_ids"] == ["gw-1:1", "gw-1:3", "gw-1:4", "gw-1:5", "gw-1:6"]
    # Vouchers 1, 3, 4, 5 at 1.5 points and 6 at 2.0 points, each x 2,000 CNY: 4 x 3,000 + 4,000.
    assert document["total"] == Decimal("16000.00")
    assert line["amount"] == "16000.00"

    # Once voucher 7 arrives, 7 and 8 lie within the chain and the re-run of the draft bills them: + 2,000 + 6,000.
    assert await submit(dsn, seven) == "stored"
    document = await may_invoice(dsn)
    (line,) = document["record"]["lines"]
    assert line["voucher_ids"] == ["gw-1:1", "gw-1:3", "gw-1:4", "gw-1:5", "gw-1:6", "gw-1:7", "gw-1:8"]
    assert document["total"] == Decimal("24000.00")
