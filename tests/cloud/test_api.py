"""REST API against a real PostgreSQL: auth, roles, sessions with CSRF, registry, contracts, value, KPIs, problem details."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import msgspec
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from litestar.testing import AsyncTestClient

from valuegate.cloud.app import create_app
from valuegate.cloud.db import UTC_OPTIONS, refresh_machine_day
from valuegate.cloud.settings import CloudSettings
from valuegate.cloud.telemetry import check_batch, store_batches
from valuegate.cloud.verify import parse_topic
from valuegate.cloud.chain import load_gateways
from valuegate.edge.protocol.keys import public_key_multibase
from valuegate.edge.protocol.records import TELEMETRY_SCHEMA, TelemetryBatch

from .conftest import Gateway, contract_yaml, make_user, minute_records, store_direct

pytestmark = pytest.mark.postgres


@pytest.fixture
async def client(cloud_dsn: str, two_tenants: tuple[Gateway, Gateway]) -> AsyncIterator[AsyncTestClient[Any]]:
    app = create_app(CloudSettings(dsn=cloud_dsn, cookie_secure=True, max_body_bytes=1024 * 1024))
    async with AsyncTestClient(app, base_url="https://testserver.local") as test_client:
        yield test_client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_health_needs_no_auth_and_data_does(client: AsyncTestClient[Any]) -> None:
    assert (await client.get("/api/v1/health")).json() == {"status": "ok"}
    ready = await client.get("/api/v1/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    response = await client.get("/api/v1/sites")
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "unauthorized"
    assert response.json()["instance"] == "/api/v1/sites"


async def test_bad_token_rejected(client: AsyncTestClient[Any], cloud_dsn: str) -> None:
    token = await make_user(cloud_dsn, "acme", "ops", ["admin"])
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert (await client.get("/api/v1/sites", headers=bearer(forged))).status_code == 401
    assert (await client.get("/api/v1/sites", headers=bearer(token))).status_code == 200


async def test_registry_flow_and_audit(client: AsyncTestClient[Any], cloud_dsn: str) -> None:
    admin = bearer(await make_user(cloud_dsn, "acme", "ops", ["admin"]))
    created = await client.post("/api/v1/sites", json={"id": "plant2", "name": "Suzhou", "time_zone": "Asia/Shanghai"}, headers=admin)
    assert created.status_code == 201
    bad_zone = await client.post("/api/v1/sites", json={"id": "plant3", "time_zone": "Mars/Olympus"}, headers=admin)
    assert (bad_zone.status_code, bad_zone.json()["code"]) == (422, "invalid_time_zone")
    duplicate = await client.post("/api/v1/sites", json={"id": "plant2", "time_zone": "UTC"}, headers=admin)
    assert (duplicate.status_code, duplicate.json()["code"]) == (409, "site_exists")

    gateway = await client.post("/api/v1/gateways", json={"id": "gw-a9", "site_id": "plant2"}, headers=admin)
    assert gateway.status_code == 201
    assert gateway.json()["stored_through"] == 0
    key = public_key_multibase(Ed25519PrivateKey.generate().public_key())
    added = await client.post("/api/v1/gateways/gw-a9/keys", json={"public_key": f"did:key:{key}", "valid_from": "2026-01-01T00:00:00+08:00"}, headers=admin)
    assert added.status_code == 201
    assert added.json()["public_key"] == key
    naive = await client.post("/api/v1/gateways/gw-a9/keys", json={"public_key": key, "valid_from": "2026-01-01T00:00:00"}, headers=admin)
    assert naive.status_code in (409, 422)
    # The gateway has stored no voucher yet, so it may still sign with its only key: refused unless forced.
    in_use = await client.post(f"/api/v1/gateways/gw-a9/keys/{added.json()['id']}/revoke", json={"reason": "rotated"}, headers=admin)
    assert (in_use.status_code, in_use.json()["code"]) == (409, "key_in_use")
    revoked = await client.post(f"/api/v1/gateways/gw-a9/keys/{added.json()['id']}/revoke", json={"reason": "copied", "force": True}, headers=admin)
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None

    actions = [entry["action"] for entry in (await client.get("/api/v1/audit", headers=admin)).json()]
    assert {"site.create", "gateway.create", "key.register", "key.revoke"} <= set(actions)


async def test_roles_limit_changes(client: AsyncTestClient[Any], cloud_dsn: str) -> None:
    csm = bearer(await make_user(cloud_dsn, "acme", "csm1", ["csm"]))
    assert (await client.get("/api/v1/sites", headers=csm)).status_code == 200
    denied = await client.post("/api/v1/sites", json={"id": "x1", "time_zone": "UTC"}, headers=csm)
    assert (denied.status_code, denied.json()["code"]) == (403, "forbidden")
    assert (await client.get("/api/v1/users", headers=csm)).status_code == 403


async def test_validation_error_is_problem(client: AsyncTestClient[Any], cloud_dsn: str) -> None:
    admin = bearer(await make_user(cloud_dsn, "acme", "ops", ["admin"]))
    response = await client.post("/api/v1/sites", json={"id": "ok", "time_zone": "UTC", "colour": "red"}, headers=admin)
    assert response.status_code == 400
    assert response.json()["code"] == "validation_failed"


async def test_oversized_body_gets_413(client: AsyncTestClient[Any], cloud_dsn: str) -> None:
    admin = bearer(await make_user(cloud_dsn, "acme", "ops", ["admin"]))
    body = b'{"source": "' + b"x" * (11 * 1024 * 1024) + b'"}'
    response = await client.post("/api/v1/contracts", content=body, headers={**admin, "content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    async with await psycopg.AsyncConnection.connect(cloud_dsn) as conn:
        assert await (await conn.execute("SELECT count(*) FROM contracts")).fetchone() == (0,)


async def test_deeply_nested_body_gets_400(client: AsyncTestClient[Any], cloud_dsn: str) -> None:
    admin = bearer(await make_user(cloud_dsn, "acme", "ops", ["admin"]))
    body = b"[" * 100_000 + b"]" * 100_000
    for path in ("/api/v1/contracts", "/api/v1/sites"):
        response = await client.post(path, content=body, headers={**admin, "content-type": "application/json"})
        assert response.status_code == 400, path
        assert response.json()["code"] == "bad_request"
        assert "nested too deeply" in response.json()["detail"]
    async with await psycopg.AsyncConnection.connect(cloud_dsn) as conn:
        assert await (await conn.execute("SELECT count(*) FROM contracts")).fetchone() == (0,)


async def test_contract_upload_revisions(client: AsyncTestClient[Any], cloud_dsn: str) -> None:
    admin = bearer(await make_user(cloud_dsn, "acme", "ops", ["admin"]))
    first = await client.post("/api/v1/contracts", json={"source": contract_yaml()}, headers=admin)
    assert first.status_code == 201
    assert first.json()["revision"] == 1
    again = await client.post("/api/v1/contracts", json={"source": contract_yaml()}, headers=admin)
    assert (again.status_code, again.json()["revision"]) == (200, 1)
    changed = await client.post("/api/v1/contracts", json={"source": contract_yaml(price="120.00")}, headers=admin)
    assert (changed.status_code, changed.json()["revision"]) == (201, 2)
    other = await client.post("/api/v1/contracts", json={"source": contract_yaml(tenant="globex")}, headers=admin)
    assert (other.status_code, other.json()["code"]) == (422, "contract_tenant_mismatch")
    broken = await client.post("/api/v1/contracts", json={"source": "schema: valuegate/contract/v1\nid: [unclosed"}, headers=admin)
    assert (broken.status_code, broken.json()["code"]) == (422, "invalid_contract")
    listed = (await client.get("/api/v1/contracts", headers=admin)).json()
    assert [(c["id"], c["revision"]) for c in listed] == [("c-2026", 2)]


async def test_contract_value_counts_verified_vouchers(client: AsyncTestClient[Any], cloud_dsn: str, two_tenants: tuple[Gateway, Gateway]) -> None:
    acme, _ = two_tenants
    csm = bearer(await make_user(cloud_dsn, "acme", "csm1", ["csm"]))
    admin = bearer(await make_user(cloud_dsn, "acme", "ops", ["admin"]))
    assert (await client.post("/api/v1/contracts", json={"source": contract_yaml(price="100.00")}, headers=admin)).status_code == 201
    points = [3.5, 2.25, 4.0, -1.0, 9.0]
    documents = [acme.next_voucher(point=p, day=dt.date(2026, 2, 1) + dt.timedelta(days=i)) for i, p in enumerate(points)]
    # Seq 4 is held back, so seq 5 lies beyond a gap and does not count yet.
    await store_direct(cloud_dsn, documents[:3] + documents[4:], topic_of=acme)

    value = (await client.get("/api/v1/contracts/c-2026/value", headers=csm)).json()
    anchor = value["anchors"][0]
    assert Decimal(anchor["points_gained"]) == Decimal("9.75")
    assert anchor["running_days"] == 3
    assert Decimal(anchor["amount"]) == Decimal("975.00")
    assert anchor["vouchers"]["gap"] == 1
    assert anchor["vouchers"]["verified"] == 3
    assert Decimal(value["total"]) == Decimal("975.00")

    listed = (await client.get("/api/v1/contracts/c-2026/vouchers", params={"state": "gap"}, headers=csm)).json()["items"]
    assert [item["voucher_id"] for item in listed] == ["gw-a1:5"]

    await store_direct(cloud_dsn, [documents[3]], topic_of=acme)
    value = (await client.get("/api/v1/contracts/c-2026/value", headers=csm)).json()
    # 3.5 + 2.25 + 4.0 - 1.0 + 9.0 = 17.75 points at 100.00 per point-day.
    assert Decimal(value["anchors"][0]["amount"]) == Decimal("1775.00")
    voucher = (await client.get("/api/v1/vouchers/gw-a1:4", headers=csm)).json()
    assert voucher["state"] == "verified"
    assert voucher["document"]["credentialSubject"]["seq"] == 4


async def test_session_cookie_and_csrf(client: AsyncTestClient[Any], cloud_dsn: str) -> None:
    await make_user(cloud_dsn, "acme", "alice", ["admin"], password="correct horse battery")
    wrong = await client.post("/api/v1/session", json={"username": "alice", "password": "wrong password!"})
    assert wrong.status_code == 401
    login = await client.post("/api/v1/session", json={"username": "alice", "password": "correct horse battery"})
    assert login.status_code == 201
    cookie = login.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "secure" in cookie
    assert "samesite=lax" in cookie
    csrf = login.json()["csrf_token"]

    assert (await client.get("/api/v1/sites")).status_code == 200
    blocked = await client.post("/api/v1/sites", json={"id": "p9", "time_zone": "UTC"})
    assert (blocked.status_code, blocked.json()["code"]) == (403, "csrf_failed")
    allowed = await client.post("/api/v1/sites", json={"id": "p9", "time_zone": "UTC"}, headers={"X-CSRF-Token": csrf})
    assert allowed.status_code == 201

    assert (await client.delete("/api/v1/session", headers={"X-CSRF-Token": csrf})).status_code == 200
    client.cookies.clear()
    assert (await client.get("/api/v1/sites")).status_code == 401


async def test_token_shown_once_and_stored_hashed(client: AsyncTestClient[Any], cloud_dsn: str) -> None:
    admin = bearer(await make_user(cloud_dsn, "acme", "ops", ["admin"]))
    user = (await client.post("/api/v1/users", json={"username": "robot", "roles": ["auditor"]}, headers=admin)).json()
    issued = await client.post("/api/v1/tokens", json={"user_id": user["id"], "name": "export"}, headers=admin)
    token = issued.json()["token"]
    listed = (await client.get("/api/v1/tokens", headers=admin)).json()
    assert all("token" not in row and "secret_sha256" not in row for row in listed)
    async with await psycopg.AsyncConnection.connect(cloud_dsn) as conn:
        stored = [row[0] for row in await (await conn.execute("SELECT secret_sha256 FROM api_tokens")).fetchall()]
    assert hashlib.sha256(token.split("_", 2)[2].encode()).hexdigest() in stored
    assert token not in stored

    assert (await client.get("/api/v1/contracts", headers=bearer(token))).status_code == 200
    assert (await client.delete(f"/api/v1/tokens/{issued.json()['id']}", headers=admin)).status_code == 200
    assert (await client.get("/api/v1/contracts", headers=bearer(token))).status_code == 401


async def test_token_expiring_in_past_rejected(client: AsyncTestClient[Any], cloud_dsn: str) -> None:
    admin = bearer(await make_user(cloud_dsn, "acme", "ops", ["admin"]))
    user = (await client.post("/api/v1/users", json={"username": "robot", "roles": ["auditor"]}, headers=admin)).json()
    past = await client.post("/api/v1/tokens", json={"user_id": user["id"], "name": "late", "expires_at": "2020-01-01T00:00:00Z"}, headers=admin)
    assert past.status_code == 422
    assert past.json()["code"] == "expires_in_past"
    assert past.json()["detail"] == "expires_at 2020-01-01T00:00:00+00:00 is not in the future, so the token could never be used; give a later time"
    assert [row["name"] for row in (await client.get("/api/v1/tokens", headers=admin)).json()] == ["tests"]  # the admin's own
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).isoformat()
    assert (await client.post("/api/v1/tokens", json={"user_id": user["id"], "expires_at": later}, headers=admin)).status_code == 201


async def test_machine_kpis_from_telemetry(client: AsyncTestClient[Any], cloud_dsn: str, two_tenants: tuple[Gateway, Gateway]) -> None:
    acme, _ = two_tenants
    csm = bearer(await make_user(cloud_dsn, "acme", "csm1", ["csm"]))
    await store_direct(cloud_dsn, [acme.next_voucher()], topic_of=acme)
    records = minute_records("m1", dt.datetime(2026, 3, 1, 1, 0, tzinfo=dt.UTC), 60)
    async with await psycopg.AsyncConnection.connect(cloud_dsn, options=UTC_OPTIONS) as conn:
        async with conn.transaction():
            gateways = await load_gateways(conn, {"gw-a1"})
            batch = TelemetryBatch(schema=TELEMETRY_SCHEMA, tenant="acme", site="plant1", gateway="gw-a1", records=records)
            topic = parse_topic("valuegate/v1/acme/plant1/gw-a1/telemetry")
            assert await store_batches(conn, [check_batch(msgspec.json.encode(batch), topic, gateways)]) == 60
        await refresh_machine_day(conn)
        await conn.commit()

    days = (await client.get("/api/v1/machines/m1/kpis", params={"from": "2026-03-01", "to": "2026-03-02"}, headers=csm)).json()
    assert len(days) == 1
    day = days[0]
    # Minutes 5, 22, 39 and 56 are unplanned stops: 56 running minutes of 60 planned busy minutes.
    assert day["plant_date"] == "2026-03-01"
    assert day["kpis"]["run_min"] == 56.0
    assert day["kpis"]["planned_busy_min"] == 60.0
    assert day["kpis"]["availability"] == pytest.approx(56 / 60)
    # 560 items at 5 s ideal cycle time over 56 running minutes: effectiveness 46.67 / 56.
    assert day["kpis"]["effectiveness"] == pytest.approx(560 * 5 / 60 / 56)
    missing = await client.get("/api/v1/machines/nope/kpis", params={"from": "2026-03-01", "to": "2026-03-02"}, headers=csm)
    assert missing.status_code == 404


@pytest.mark.parametrize(
    ("content_type", "shown"),
    [("text/plain", "'text/plain'"), ("application/x-www-form-urlencoded", "'application/x-www-form-urlencoded'"), (None, "none")],
)
async def test_body_not_declared_json_rejected(client: AsyncTestClient[Any], cloud_dsn: str, content_type: str | None, shown: str) -> None:
    """A JSON body sent under another media type is refused with 415 before it is parsed, and nothing is stored."""
    admin = bearer(await make_user(cloud_dsn, "acme", "ops", ["admin"]))
    headers = {**admin, **({"Content-Type": content_type} if content_type else {})}
    response = await client.post("/api/v1/contracts", content=json.dumps({"source": contract_yaml()}).encode(), headers=headers)
    assert response.status_code == 415
    problem = response.json()
    assert problem["code"] == "unsupported_media_type"
    assert problem["detail"] == f"the request body must be JSON; send it with Content-Type: application/json (got {shown})"
    async with await psycopg.AsyncConnection.connect(cloud_dsn) as conn:
        assert await (await conn.execute("SELECT count(*) FROM contracts")).fetchone() == (0,)
    accepted = await client.post("/api/v1/contracts", content=json.dumps({"source": contract_yaml()}).encode(),
                                 headers={**admin, "Content-Type": "application/json; charset=utf-8"})
    assert accepted.status_code == 201, accepted.text


@pytest.mark.parametrize(
    ("body", "status", "code", "detail"),
    [
        (b"", 400, "validation_failed", "the request body is missing; add it"),
        (b'{"source": ', 400, "bad_request", "the request body is not valid JSON (input data was truncated); send one complete JSON document"),
        (b"{source: 1}", 400, "bad_request",
         "the request body is not valid JSON (JSON is malformed: object keys must be strings (byte 1)); send one complete JSON document"),
    ],
    ids=["empty", "truncated", "malformed"],
)
async def test_broken_json_body_named(client: AsyncTestClient[Any], cloud_dsn: str, body: bytes, status: int, code: str, detail: str) -> None:
    admin = bearer(await make_user(cloud_dsn, "acme", "ops", ["admin"]))
    response = await client.post("/api/v1/contracts", content=body, headers={**admin, "Content-Type": "application/json"})
    assert response.status_code == status
    assert (response.json()["code"], response.json()["detail"]) == (code, detail)
