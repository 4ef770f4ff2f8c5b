"""API messages that tell the caller what to change: the body size limit, control characters and a revoked gateway key."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import psycopg
import pytest
from litestar.testing import AsyncTestClient

from valuegate.cloud import store
from valuegate.cloud.app import create_app
from valuegate.cloud.chain import load_gateways, store_rejections
from valuegate.cloud.db import UTC_OPTIONS
from valuegate.cloud.settings import CloudSettings
from valuegate.cloud.verify import VoucherError, check_voucher, parse_topic

from .conftest import Gateway, make_user

pytestmark = pytest.mark.postgres

LIMIT = 2048


@pytest.fixture
async def client(cloud_dsn: str, two_tenants: tuple[Gateway, Gateway]) -> AsyncIterator[AsyncTestClient[Any]]:
    app = create_app(CloudSettings(dsn=cloud_dsn, cookie_secure=True, max_body_bytes=LIMIT))
    async with AsyncTestClient(app, base_url="https://testserver.local") as test_client:
        yield test_client


async def test_oversized_body_names_limit(client: AsyncTestClient[Any]) -> None:
    response = await client.post("/api/v1/session", json={"username": "csm1", "password": "x" * LIMIT})

    assert response.status_code == 413
    problem = response.json()
    assert problem["code"] == "payload_too_large"
    assert problem["max_body_bytes"] == LIMIT
    assert problem["detail"] == (f"the request body is larger than {LIMIT} bytes, the limit the cloud setting max_body_bytes sets; "
                                 "send a smaller body, or ask the operator to raise max_body_bytes")


@pytest.mark.parametrize(("language", "expected"), [
    ("zh-CN", f"请求内容超过 {LIMIT} 字节，超出了云端设置 max_body_bytes 规定的上限；请缩短提交的内容，或请运维人员调高 max_body_bytes。"),
    ("en", f"The request is larger than {LIMIT} bytes, the limit the cloud setting max_body_bytes sets; shorten what you submit, "
           "or ask the operator to raise max_body_bytes."),
])
async def test_oversized_form_page_names_limit(client: AsyncTestClient[Any], language: str, expected: str) -> None:
    response = await client.post(f"/login?lang={language}", data={"username": "csm1", "password": "x" * LIMIT})

    assert response.status_code == 413
    assert response.headers["content-type"].startswith("text/html")
    assert expected in response.text


async def test_control_character_message_hides_pattern(client: AsyncTestClient[Any]) -> None:
    response = await client.post("/api/v1/session", json={"username": "cs\u0001m", "password": "secret"})

    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert (error["field"], error["kind"]) == ("username", "control")
    assert error["message"] == "contains a control character"
    assert "regex" not in response.text


async def test_revoked_key_rejection_says_what_to_do(client: AsyncTestClient[Any], cloud_dsn: str, two_tenants: tuple[Gateway, Gateway]) -> None:
    acme, _ = two_tenants
    topic = parse_topic(acme.topic("vouchers"))
    payload = msgspec.json.encode(acme.next_voucher())
    async with await psycopg.AsyncConnection.connect(cloud_dsn, options=UTC_OPTIONS) as conn:
        async with conn.transaction():
            cur = await conn.execute("SELECT id FROM gateway_keys WHERE gateway_id = 'gw-a1'")
            (key_id,) = await cur.fetchone()
            await store.revoke_gateway_key(conn, "acme", "gw-a1", key_id, "key leaked", force=True)
        async with conn.transaction():
            gateways = await load_gateways(conn, {"gw-a1"})
            with pytest.raises(VoucherError) as caught:
                check_voucher(payload, topic, gateways, now=dt.datetime.now(dt.UTC), clock_skew=dt.timedelta(minutes=5))
            assert caught.value.code == "key_revoked"
            await store_rejections(conn, [("voucher", acme.topic("vouchers"), "acme", "gw-a1", "gw-a1:1", "c-2026", caught.value.code, str(caught.value),
                                           hashlib.sha256(payload).hexdigest(), len(payload), payload)])
    headers = {"Authorization": f"Bearer {await make_user(cloud_dsn, 'acme', 'ops', ['admin'])}"}

    (rejection,) = (await client.get("/api/v1/rejections", headers=headers)).json()

    assert rejection["code"] == "key_revoked"
    assert rejection["reason"].startswith(f"{caught.value}; ")
    assert rejection["reason"].endswith(
        "the gateway still signs with this key: run `valuegate keys rotate` on gateway 'gw-a1', then register the new public key "
        "(the did:key that `valuegate keys export-public` prints) with `valuegate cloud admin key-add acme gw-a1 NEW_KEY`")
