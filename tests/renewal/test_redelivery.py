"""Delivering a renewal package again: after the attempts ran out, or when it was built before the webhook was set."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from litestar.testing import AsyncTestClient
from typer.testing import CliRunner

from tests.factories import voucher_chain
from tests.renewal.receiver import LOOPBACK, LOOPBACK_NETWORKS, receiver
from tests.renewal.test_renewal_service import SECRET, TRIGGERS
from tests.settlement.seed import connect, ingest, seed
from tests.verify.bundles import oee_contract
from valuegate.cli import app as root_app
from valuegate.cloud import auth
from valuegate.cloud.app import create_app
from valuegate.cloud.renewal import service
from valuegate.cloud.renewal.webhook import RetryPolicy
from valuegate.cloud.settings import CloudSettings
from valuegate.cloud.store import Invalid, NotFound

pytestmark = pytest.mark.postgres

FAST = RetryPolicy(attempts=2, base_delay_s=0.02, max_delay_s=0.05, timeout_s=5)


async def built_package(dsn: str) -> int:
    """Seed contract C-1 with five vouchers, build its packages without a webhook and return the first package's id."""
    key = Ed25519PrivateKey.generate()
    await seed(dsn, oee_contract(triggers=TRIGGERS), key)
    await ingest(dsn, voucher_chain(key, 5))
    async with await connect(dsn) as conn:
        created = await service.check_renewals(conn, "acme", "C-1", today=dt.date(2024, 6, 1), pdf=False)
    return created[0]["id"]


async def attempts(dsn: str, package_id: int) -> list[tuple[Any, ...]]:
    async with await connect(dsn) as conn:
        cur = await conn.execute("SELECT attempt, status_code, delivered FROM webhook_deliveries WHERE package_id = %s ORDER BY attempt", (package_id,))
        return await cur.fetchall()


async def redelivery_audits(dsn: str) -> list[tuple[Any, ...]]:
    async with await connect(dsn) as conn:
        cur = await conn.execute("SELECT actor, object_id, detail->>'url' FROM audit_log WHERE action = 'renewal.redeliver' ORDER BY id")
        return await cur.fetchall()


async def test_failed_delivery_sent_again(database):
    package_id = await built_package(database)
    # Built before any webhook was set: nothing was sent, and a request to deliver it again fails naming the cause.
    async with await connect(database) as conn:
        with pytest.raises(Invalid, match="has no webhook") as caught:
            await service.request_redelivery(conn, "acme", package_id, actor="user:csm")
    assert caught.value.code == "webhook_not_set"

    with receiver([500]) as (down, _):
        async with await connect(database) as conn:
            await service.set_endpoint(conn, "acme", down, SECRET, actor="user:admin")
        assert await service.deliver_package(database, "acme", package_id, policy=FAST, allowed_networks=LOOPBACK) is False
    with receiver([200]) as (url, received):
        async with await connect(database) as conn:
            await service.set_endpoint(conn, "acme", url, SECRET, actor="user:admin")
            await service.request_redelivery(conn, "acme", package_id, actor="user:csm")
        assert await service.deliver_package(database, "acme", package_id, policy=FAST, allowed_networks=LOOPBACK) is True

    # The new attempt is numbered after the two that failed.
    assert await attempts(database, package_id) == [(1, 500, False), (2, 500, False), (3, 200, True)]
    assert [int(r["headers"]["x-valuegate-package"]) for r in received] == [package_id]
    assert await redelivery_audits(database) == [("user:csm", str(package_id), url)]
    # Another tenant's package reads as not found.
    async with await connect(database) as conn:
        with pytest.raises(NotFound):
            await service.request_redelivery(conn, "globex", package_id, actor="user:globex-csm")


@pytest.fixture
async def api(database) -> AsyncIterator[tuple[AsyncTestClient[Any], int, str]]:
    package_id = await built_package(database)
    async with await connect(database) as conn:
        for username, roles in (("csm1", ["csm"]), ("aud1", ["auditor"])):
            await auth.create_user(conn, "acme", username, "correct-horse-battery", roles)
    app = create_app(CloudSettings(dsn=database, webhook_allowed_networks=LOOPBACK_NETWORKS, cookie_secure=True))
    async with AsyncTestClient(app, base_url="https://testserver.local") as client:
        yield client, package_id, database


async def _bearer(dsn: str, username: str) -> dict[str, str]:
    async with await connect(dsn) as conn:
        cur = await conn.execute("SELECT id FROM users WHERE username = %s", (username,))
        (user_id,) = await cur.fetchone()
        _, token = await auth.issue_token(conn, "acme", user_id, "test", actor="test")
    return {"Authorization": f"Bearer {token}"}


async def test_api_delivers_package_again(api):
    client, package_id, dsn = api
    csm, auditor = await _bearer(dsn, "csm1"), await _bearer(dsn, "aud1")

    unset = await client.post(f"/api/v1/packages/{package_id}/deliver", headers=csm)
    assert (unset.status_code, unset.json()["code"]) == (422, "webhook_not_set")
    assert (await client.post(f"/api/v1/packages/{package_id}/deliver", headers=auditor)).status_code == 403
    assert (await client.post("/api/v1/packages/999999/deliver", headers=csm)).status_code == 404

    with receiver([200]) as (url, received):
        async with await connect(dsn) as conn:
            await service.set_endpoint(conn, "acme", url, SECRET, actor="user:admin")
        response = await client.post(f"/api/v1/packages/{package_id}/deliver", headers=csm)
        assert response.status_code == 202
        assert response.json() == {"package": package_id, "status": "delivering"}
        for _ in range(100):
            if await attempts(dsn, package_id):
                break
            await asyncio.sleep(0.05)
    assert await attempts(dsn, package_id) == [(1, 200, True)]
    assert len(received) == 1
    assert await redelivery_audits(dsn) == [("user:csm1", str(package_id), url)]


def test_cli_delivers_package_again(database, monkeypatch):
    monkeypatch.setenv("VALUEGATE_CLOUD_WEBHOOK_ALLOWED_NETWORKS", ",".join(LOOPBACK_NETWORKS))
    package_id = asyncio.run(built_package(database))
    with receiver([200]) as (url, received):
        async def set_webhook() -> None:
            async with await connect(database) as conn:
                await service.set_endpoint(conn, "acme", url, SECRET, actor="user:admin")

        asyncio.run(set_webhook())
        result = CliRunner().invoke(root_app, ["cloud", "admin", "package-deliver", "acme", str(package_id), "--dsn", database])
    assert result.exit_code == 0, result.output
    # structlog's lines go to the same output first.
    assert result.output.strip().splitlines()[-1] == f"package {package_id} delivered"
    assert len(received) == 1
    assert asyncio.run(redelivery_audits(database)) == [("cli", str(package_id), url)]

    missing = CliRunner().invoke(root_app, ["cloud", "admin", "package-deliver", "acme", "999999", "--dsn", database])
    assert missing.exit_code != 0
    assert "renewal package 999999 not found" in missing.output


async def test_api_lists_packages_with_delivery(api):
    client, package_id, dsn = api
    auditor = await _bearer(dsn, "aud1")
    async with await connect(dsn) as conn:
        cur = await conn.execute("SELECT id, trigger_key FROM renewal_packages ORDER BY fired_at DESC, id DESC")
        built = await cur.fetchall()

    listed = (await client.get("/api/v1/packages", headers=auditor)).json()
    assert [(p["id"], p["trigger_key"]) for p in listed] == built
    assert {(p["contract_id"], p["delivery"], p["attempts"]) for p in listed} == {("C-1", "not_sent", 0)}
    assert all(p["fired_at"].endswith("Z") or "+00:00" in p["fired_at"] for p in listed)

    with receiver([500, 200]) as (url, _):
        async with await connect(dsn) as conn:
            await service.set_endpoint(conn, "acme", url, SECRET, actor="user:admin")
        assert await service.deliver_package(dsn, "acme", package_id, policy=FAST, allowed_networks=LOOPBACK) is True
    states = {p["id"]: (p["delivery"], p["attempts"]) for p in (await client.get("/api/v1/packages", headers=auditor)).json()}
    assert states[package_id] == ("delivered", 2)

    one = await client.get(f"/api/v1/packages/{package_id}", headers=auditor)
    assert one.status_code == 200
    body = one.json()
    assert (body["id"], body["contract_id"], body["delivery"], body["attempts"]) == (package_id, "C-1", "delivered", 2)
    assert [(d["attempt"], d["status_code"], d["delivered"]) for d in body["deliveries"]] == [(1, 500, False), (2, 200, True)]
    assert "archive" not in body
    assert (await client.get("/api/v1/packages/999999", headers=auditor)).status_code == 404


async def fail_delivery(dsn: str, package_id: int) -> None:
    """Deliver the package to a webhook that responds with status 500, so that both attempts fail."""
    with receiver([500]) as (url, _):
        async with await connect(dsn) as conn:
            await service.set_endpoint(conn, "acme", url, SECRET, actor="user:admin")
        assert await service.deliver_package(dsn, "acme", package_id, policy=FAST, allowed_networks=LOOPBACK) is False


async def test_failed_attempts_read_failed(api):
    client, package_id, dsn = api
    await fail_delivery(dsn, package_id)
    body = (await client.get(f"/api/v1/packages/{package_id}", headers=await _bearer(dsn, "csm1"))).json()
    assert (body["delivery"], body["attempts"]) == ("failed", 2)


async def test_running_delivery_reads_delivering(api):
    """While a delivery loop holds the package's lock, the API, the contract page and the package page show the state delivering."""
    client, package_id, dsn = api
    await fail_delivery(dsn, package_id)
    csm = await _bearer(dsn, "csm1")
    other = [p["id"] for p in (await client.get("/api/v1/packages", headers=csm)).json() if p["id"] != package_id]

    claim = await service.claim_delivery(dsn, "acme", package_id)
    try:
        listed = {p["id"]: p["delivery"] for p in (await client.get("/api/v1/packages", headers=csm)).json()}
        detail = (await client.get(f"/api/v1/packages/{package_id}", headers=csm)).json()
        contract_page = (await client.get("/contracts/C-1", headers=csm)).text
        package_page = (await client.get(f"/packages/{package_id}", headers=csm)).text
    finally:
        await claim.release()
    after = (await client.get(f"/api/v1/packages/{package_id}", headers=csm)).json()

    assert listed[package_id] == "delivering"
    assert [listed[i] for i in other] == ["not_sent"] * len(other)
    assert (detail["delivery"], detail["attempts"]) == ("delivering", 2)
    assert "正在推送" in contract_page
    assert 'id="delivering"' in package_page
    assert (after["delivery"], after["attempts"]) == ("failed", 2)
