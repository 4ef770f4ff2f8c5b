"""Rejections whose voucher id was stored later: left out of counts, findings and the voucher table; localized reasons."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.factories import make_claims
from tests.settlement.seed import KEY_VALID_FROM, connect, ingest
from valuegate.cloud import store
from valuegate.cloud.chain import load_gateways, rejection_hints, store_rejections
from valuegate.cloud.verify import Topic, check_voucher
from valuegate.edge.protocol import voucher as v
from valuegate.edge.protocol.keys import public_key_multibase

pytestmark = pytest.mark.postgres

TOPIC = "valuegate/v1/acme/plant-1/gw-1/vouchers"
FUTURE = "2999-01-01T00:00:00Z"


async def _reject(dsn: str, document: dict) -> str:
    """Check one voucher as the ingest workers do, store its rejection row, and return the rejection code."""
    payload = json.dumps(document).encode("utf-8")
    topic = Topic("acme", "plant-1", "gw-1", "vouchers")
    now = dt.datetime.now(dt.UTC)
    async with await connect(dsn) as conn, conn.transaction():
        gateways = await load_gateways(conn, {"gw-1"})
        with pytest.raises(v.VoucherError) as caught:
            check_voucher(payload, topic, gateways, now=now, clock_skew=dt.timedelta(minutes=5))
        error = caught.value
        voucher_id, contract = rejection_hints(payload, topic, gateways, now=now)
        row = ("voucher", TOPIC, "acme", "gw-1", voucher_id, contract, error.code, str(error),
               hashlib.sha256(payload).hexdigest(), len(payload), payload)
        await store_rejections(conn, [row])
    return error.code


async def _register(dsn: str, key: Ed25519PrivateKey) -> None:
    async with await connect(dsn) as conn, conn.transaction():
        await store.add_gateway_key(conn, "acme", "gw-1", public_key_multibase(key.public_key()), valid_from=KEY_VALID_FROM)


@pytest.fixture(scope="module")
def rotated(site):
    """Voucher 22 is signed by a key the cloud learns of only after its first delivery; voucher 40 claims an issue time in the future."""
    new_key = Ed25519PrivateKey.generate()
    first = v.build_voucher(make_claims(seq=22, prev=v.voucher_hash(site.last_voucher), plant_date=dt.date(2024, 5, 27)), new_key)
    assert asyncio.run(_reject(site.dsn, first)) == "key_unknown"
    asyncio.run(_register(site.dsn, new_key))
    assert asyncio.run(ingest(site.dsn, [first])) == ["gw-1:22"]

    future = v.build_voucher(make_claims(seq=40, prev="sha256:" + "00" * 32, plant_date=dt.date(2024, 6, 20), issued_at=FUTURE), site.key)
    assert asyncio.run(_reject(site.dsn, future)) == "future_timestamp"
    return site


def _rows(page: str, voucher_id: str) -> list[str]:
    return [part.split("</tr>", 1)[0] for part in page.split(f'<tr data-voucher="{voucher_id}">')[1:]]


def test_value_counts_only_open_rejection(rotated, login):
    value = login("csm1").get("/api/v1/contracts/C-1/value").json()
    assert value["rejected"] == 1


def test_rejection_list_marks_superseded(rotated, login):
    listed = {row["voucher_id"]: row for row in login("csm1").get("/api/v1/rejections").json()}
    assert listed["gw-1:22"]["code"] == "key_unknown"
    assert listed["gw-1:22"]["superseded"] is True
    assert listed["gw-1:40"]["superseded"] is False


def test_rejected_state_lists_open_rejection(rotated, login):
    items = login("csm1").get("/api/v1/contracts/C-1/vouchers?state=rejected").json()["items"]
    assert [item["voucher_id"] for item in items] == ["gw-1:40"]


@pytest.mark.parametrize(("lang", "finding", "reason", "stored"), [
    ("zh-CN", "网关 gw-1 的凭证 gw-1:40 被拒收：", "按云端时钟，其签发时间在未来，请检查网关时钟。", "已核验"),
    ("en", "Gateway gw-1, voucher gw-1:40 rejected: ", "by the cloud&#39;s clock it was issued in the future; check the gateway&#39;s clock.", "verified"),
])
def test_page_shows_stored_voucher_once(rotated, login, lang, finding, reason, stored):
    page = login("csm1").get(f"/contracts/C-1?lang={lang}").text
    (row,) = _rows(page, "gw-1:22")
    assert f">{stored}</span>" in row
    assert "key_unknown" not in page
    assert finding + reason in page
    (forged,) = _rows(page, "gw-1:40")
    assert f'title="{reason}"' in forged


def test_page_keeps_english_detail_apart(rotated, login):
    page = login("csm1").get("/contracts/C-1?lang=zh-CN").text
    finding = page.split("gw-1:40 被拒收", 1)[1].split("</li>", 1)[0]
    assert '<small class="muted detail">future_timestamp: issued_at 2999-01-01T00:00:00+00:00 lies in the future' in finding


def test_forgery_under_a_stored_id_stays_a_rejection(rotated, login):
    """A different payload under voucher 22's id, rejected before the genuine voucher was stored, is not superseded by it."""
    claims = make_claims(seq=22, prev=v.voucher_hash(rotated.last_voucher), plant_date=dt.date(2024, 5, 27), issued_at=FUTURE)
    forged = v.build_voucher(claims, rotated.key)
    asyncio.run(_reject(rotated.dsn, forged))

    async def backdate_and_list() -> None:
        async with await connect(rotated.dsn) as conn, conn.transaction():
            # Received before the genuine voucher 22 was stored, as a forgery racing it would be.
            await conn.execute("UPDATE rejections SET received_at = received_at - interval '1 day' WHERE payload_sha256 = %s",
                               (hashlib.sha256(json.dumps(forged).encode("utf-8")).hexdigest(),))  # fmt: skip

    asyncio.run(backdate_and_list())
    try:
        rows = [row for row in login("csm1").get("/api/v1/rejections").json() if row["voucher_id"] == "gw-1:22"]
        assert sorted((row["code"], row["superseded"]) for row in rows) == [("future_timestamp", False), ("key_unknown", True)]
        assert login("csm1").get("/api/v1/contracts/C-1/value").json()["rejected"] == 2
    finally:

        async def remove() -> None:
            async with await connect(rotated.dsn) as conn, conn.transaction():
                await conn.execute("DELETE FROM rejections WHERE code = 'future_timestamp' AND voucher_id = 'gw-1:22'")

        asyncio.run(remove())
