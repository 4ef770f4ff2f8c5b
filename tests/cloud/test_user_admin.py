"""Disabling and enabling users, revoking tokens (API and `cloud admin`) and token last use, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient
from typer.testing import CliRunner

from valuegate.cli import app as root_app
from valuegate.cloud import auth, store
from valuegate.cloud.app import create_app
from valuegate.cloud.db import UTC_OPTIONS
from valuegate.cloud.settings import CloudSettings

from .conftest import Gateway, make_user

pytestmark = pytest.mark.postgres


@pytest.fixture
async def client(cloud_dsn: str, two_tenants: tuple[Gateway, Gateway]) -> AsyncIterator[AsyncTestClient[Any]]:
    app = create_app(CloudSettings(dsn=cloud_dsn, cookie_secure=True))
    async with AsyncTestClient(app, base_url="https://testserver.local") as test_client:
        yield test_client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def user_ids(dsn: str) -> dict[str, int]:
    async with await psycopg.AsyncConnection.connect(dsn, options=UTC_OPTIONS) as conn:
        rows = await (await conn.execute("SELECT username, id FROM users")).fetchall()
    return dict(rows)


async def last_used(dsn: str, token: str) -> dt.datetime | None:
    async with await psycopg.AsyncConnection.connect(dsn, options=UTC_OPTIONS) as conn:
        rows = await (await conn.execute("SELECT last_used_at FROM api_tokens WHERE id = %s", (token.split("_")[1],))).fetchall()
    return rows[0][0]


async def admin_cli(dsn: str, *args: str) -> Any:
    """Run `valuegate cloud admin` in a thread, because the command starts an event loop of its own."""
    command = ["cloud", "admin", *args, "--dsn", dsn]
    return await asyncio.to_thread(CliRunner().invoke, root_app, command, env={"VALUEGATE_CLOUD_DSN": None})


async def test_admin_cannot_disable_self(client: AsyncTestClient[Any], cloud_dsn: str) -> None:
    admin = bearer(await make_user(cloud_dsn, "acme", "boss", ["admin"]))
    await make_user(cloud_dsn, "acme", "deputy", ["admin"])
    boss_id = (await user_ids(cloud_dsn))["boss"]

    refused = await client.delete(f"/api/v1/users/{boss_id}", headers=admin)
    assert refused.status_code == 409
    assert refused.json()["code"] == "cannot_disable_self"
    assert "another admin" in refused.json()["detail"]
    assert (await client.get("/api/v1/users", headers=admin)).status_code == 200


async def test_last_enabled_admin_kept(cloud_dsn: str, two_tenants: tuple[Gateway, Gateway]) -> None:
    await make_user(cloud_dsn, "acme", "boss", ["admin"])
    await make_user(cloud_dsn, "acme", "clerk", ["csm"])
    result = await admin_cli(cloud_dsn, "user-disable", "acme", "boss")
    assert result.exit_code == 1
    assert "last enabled admin of tenant 'acme'" in result.output
    async with await psycopg.AsyncConnection.connect(cloud_dsn, options=UTC_OPTIONS) as conn:
        with pytest.raises(store.Conflict) as caught:
            await auth.disable_user(conn, "acme", (await user_ids(cloud_dsn))["boss"])
    assert caught.value.code == "last_admin"


async def test_admins_disabling_each_other(cloud_dsn: str, two_tenants: tuple[Gateway, Gateway]) -> None:
    """Two admins disabling each other at the same moment: the second transaction finds the last admin and fails."""
    await make_user(cloud_dsn, "acme", "ann", ["admin"])
    await make_user(cloud_dsn, "acme", "bob", ["admin"])
    ids = await user_ids(cloud_dsn)
    async with (
        await psycopg.AsyncConnection.connect(cloud_dsn, options=UTC_OPTIONS) as first,
        await psycopg.AsyncConnection.connect(cloud_dsn, options=UTC_OPTIONS) as second,
    ):
        async with first.transaction():
            await auth.disable_user(first, "acme", ids["bob"], caller_id=ids["ann"])

            async def bob_disables_ann() -> None:
                async with second.transaction():
                    await auth.disable_user(second, "acme", ids["ann"], caller_id=ids["bob"])

            racing = asyncio.create_task(bob_disables_ann())
            await asyncio.sleep(0.3)
            assert not racing.done()  # waits for the first transaction's row locks
        with pytest.raises(store.Conflict) as caught:
            await racing
    assert caught.value.code == "last_admin"
    async with await psycopg.AsyncConnection.connect(cloud_dsn, options=UTC_OPTIONS) as conn:
        rows = await (await conn.execute("SELECT username, disabled FROM users ORDER BY username")).fetchall()
    assert rows == [("ann", False), ("bob", True)]


async def test_disabled_user_enabled_again(client: AsyncTestClient[Any], cloud_dsn: str) -> None:
    admin = bearer(await make_user(cloud_dsn, "acme", "boss", ["admin"]))
    old_token = await make_user(cloud_dsn, "acme", "clerk", ["csm"])
    clerk_id = (await user_ids(cloud_dsn))["clerk"]

    disabled = await client.delete(f"/api/v1/users/{clerk_id}", headers=admin)
    assert (disabled.status_code, disabled.json()["disabled"]) == (200, True)
    refused = await client.post("/api/v1/tokens", json={"user_id": clerk_id}, headers=admin)
    assert (refused.status_code, refused.json()["code"]) == (422, "user_disabled")
    assert f"POST /api/v1/users/{clerk_id}/enable" in refused.json()["detail"]
    assert "valuegate cloud admin user-enable acme clerk" in refused.json()["detail"]

    enabled = await client.post(f"/api/v1/users/{clerk_id}/enable", headers=admin)
    assert (enabled.status_code, enabled.json()["disabled"]) == (200, False)
    issued = await client.post("/api/v1/tokens", json={"user_id": clerk_id}, headers=admin)
    assert issued.status_code == 201
    assert (await client.get("/api/v1/contracts", headers=bearer(issued.json()["token"]))).status_code == 200
    assert (await client.get("/api/v1/contracts", headers=bearer(old_token))).status_code == 401
    audit = [row["action"] for row in (await client.get("/api/v1/audit", headers=admin)).json()]
    assert "user.enable" in audit
    assert "user.disable" in audit


async def test_enable_needs_admin(client: AsyncTestClient[Any], cloud_dsn: str) -> None:
    clerk = bearer(await make_user(cloud_dsn, "acme", "clerk", ["csm"]))
    clerk_id = (await user_ids(cloud_dsn))["clerk"]
    assert (await client.post(f"/api/v1/users/{clerk_id}/enable", headers=clerk)).status_code == 403
    other_admin = bearer(await make_user(cloud_dsn, "globex", "g-boss", ["admin"]))
    assert (await client.post(f"/api/v1/users/{clerk_id}/enable", headers=other_admin)).status_code == 404


async def test_cli_disables_enables_and_revokes(client: AsyncTestClient[Any], cloud_dsn: str) -> None:
    await make_user(cloud_dsn, "acme", "boss", ["admin"])
    token = await make_user(cloud_dsn, "acme", "clerk", ["csm"])

    disabled = await admin_cli(cloud_dsn, "user-disable", "acme", "clerk")
    assert disabled.exit_code == 0, disabled.output
    assert "clerk" in disabled.output
    assert (await client.get("/api/v1/contracts", headers=bearer(token))).status_code == 401
    unknown = await admin_cli(cloud_dsn, "user-enable", "globex", "clerk")
    assert unknown.exit_code == 1
    assert "user 'clerk' not found in tenant 'globex'" in unknown.output
    enabled = await admin_cli(cloud_dsn, "user-enable", "acme", "clerk")
    assert enabled.exit_code == 0, enabled.output

    issued = await admin_cli(cloud_dsn, "token-issue", "acme", "clerk")
    new_token = issued.output.strip()
    assert (await client.get("/api/v1/contracts", headers=bearer(new_token))).status_code == 200
    revoked = await admin_cli(cloud_dsn, "token-revoke", "acme", new_token)
    assert revoked.exit_code == 0, revoked.output
    assert new_token.split("_", 2)[2] not in revoked.output
    assert (await client.get("/api/v1/contracts", headers=bearer(new_token))).status_code == 401
    missing = await admin_cli(cloud_dsn, "token-revoke", "globex", new_token.split("_")[1])
    assert missing.exit_code == 1
    assert "not found" in missing.output


async def test_token_last_use_recorded(client: AsyncTestClient[Any], cloud_dsn: str) -> None:
    token = await make_user(cloud_dsn, "acme", "boss", ["admin"])
    assert await last_used(cloud_dsn, token) is None

    assert (await client.get("/api/v1/sites", headers=bearer(token))).status_code == 200
    first = await last_used(cloud_dsn, token)
    assert first is not None
    assert abs(dt.datetime.now(dt.UTC) - first) < dt.timedelta(seconds=30)

    # Within the minute another request writes nothing.
    assert (await client.get("/api/v1/sites", headers=bearer(token))).status_code == 200
    assert await last_used(cloud_dsn, token) == first

    async with await psycopg.AsyncConnection.connect(cloud_dsn, options=UTC_OPTIONS) as conn:
        await conn.execute("UPDATE api_tokens SET last_used_at = last_used_at - interval '2 minutes'")
        await conn.commit()
    listed = (await client.get("/api/v1/tokens", headers=bearer(token))).json()
    renewed = await last_used(cloud_dsn, token)
    assert renewed is not None
    assert renewed >= first
    assert [row["last_used_at"] is not None for row in listed] == [True]


async def test_bad_secret_leaves_last_use(client: AsyncTestClient[Any], cloud_dsn: str) -> None:
    token = await make_user(cloud_dsn, "acme", "boss", ["admin"])
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert (await client.get("/api/v1/sites", headers=bearer(forged))).status_code == 401
    assert await last_used(cloud_dsn, token) is None


async def test_cli_create_sets_display_name(client: AsyncTestClient[Any], cloud_dsn: str) -> None:
    admin = bearer(await make_user(cloud_dsn, "acme", "boss", ["admin"]))
    created = await admin_cli(cloud_dsn, "user-create", "acme", "fin.zhang", "--role", "finance", "--display-name", "张财务 Zhang")
    assert created.exit_code == 0, created.output
    assert "shown as 张财务 Zhang" in created.output
    users = {row["username"]: row for row in (await client.get("/api/v1/users", headers=admin)).json()}
    assert users["fin.zhang"]["display_name"] == "张财务 Zhang"

    plain = await admin_cli(cloud_dsn, "user-create", "acme", "fin.li", "--role", "finance")
    assert plain.exit_code == 0, plain.output
    assert "shown as" not in plain.output
    users = {row["username"]: row for row in (await client.get("/api/v1/users", headers=admin)).json()}
    assert users["fin.li"]["display_name"] == ""


@pytest.mark.parametrize("display_name", ["two\nlines", "x" * 201])
async def test_cli_bad_display_name(cloud_dsn: str, two_tenants: tuple[Gateway, Gateway], display_name: str) -> None:
    refused = await admin_cli(cloud_dsn, "user-create", "acme", "fin.bad", "--role", "finance", "--display-name", display_name)
    assert refused.exit_code == 1
    assert "must be one line of at most 200 characters" in refused.output
    assert "fin.bad" not in await user_ids(cloud_dsn)
