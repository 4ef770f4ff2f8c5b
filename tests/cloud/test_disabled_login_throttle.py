"""Log-ins of a disabled user and the failed log-in throttle, through the API against a real PostgreSQL.

A right password of a disabled user is rejected without counting, a wrong one counts,
and enabling the user (API or `cloud admin`) clears its counts in the database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from valuegate.cloud.app import create_app
from valuegate.cloud.settings import CloudSettings

from .conftest import Gateway, make_user
from .test_user_admin import admin_cli, bearer, user_ids

pytestmark = pytest.mark.postgres

PASSWORD = "clerk password 1"


@pytest.fixture
async def client(cloud_dsn: str, two_tenants: tuple[Gateway, Gateway]) -> AsyncIterator[AsyncTestClient[Any]]:
    app = create_app(CloudSettings(dsn=cloud_dsn, cookie_secure=True))
    async with AsyncTestClient(app, base_url="https://testserver.local") as test_client:
        yield test_client


@pytest.fixture
async def admin(client: AsyncTestClient[Any], cloud_dsn: str) -> dict[str, str]:
    """Headers of the tenant admin, after creating the clerk with a password."""
    headers = bearer(await make_user(cloud_dsn, "acme", "dl-boss", ["admin"]))
    await make_user(cloud_dsn, "acme", "dl-clerk", ["csm"], password=PASSWORD)
    return headers


async def log_in(client: AsyncTestClient[Any], username: str, password: str) -> int:
    response = await client.post("/api/v1/session", json={"username": username, "password": password})
    client.cookies.clear()
    return response.status_code


async def test_disabled_right_password_not_counted(client: AsyncTestClient[Any], admin: dict[str, str], cloud_dsn: str) -> None:
    clerk_id = (await user_ids(cloud_dsn))["dl-clerk"]
    assert (await client.delete(f"/api/v1/users/{clerk_id}", headers=admin)).status_code == 200

    statuses = [await log_in(client, "dl-clerk", PASSWORD) for _ in range(7)]
    assert statuses == [401] * 7

    assert (await client.post(f"/api/v1/users/{clerk_id}/enable", headers=admin)).status_code == 200
    assert await log_in(client, "dl-clerk", PASSWORD) == 201


async def test_disabled_wrong_password_counts(client: AsyncTestClient[Any], admin: dict[str, str], cloud_dsn: str) -> None:
    clerk_id = (await user_ids(cloud_dsn))["dl-clerk"]
    assert (await client.delete(f"/api/v1/users/{clerk_id}", headers=admin)).status_code == 200

    wrong = [await log_in(client, "dl-clerk", "wrong password") for _ in range(5)]
    assert wrong == [401] * 5
    assert await log_in(client, "dl-clerk", PASSWORD) == 429


async def test_api_enable_clears_throttle(client: AsyncTestClient[Any], admin: dict[str, str], cloud_dsn: str) -> None:
    await make_user(cloud_dsn, "acme", "dl-other", ["csm"], password=PASSWORD)
    clerk_id = (await user_ids(cloud_dsn))["dl-clerk"]
    assert (await client.delete(f"/api/v1/users/{clerk_id}", headers=admin)).status_code == 200
    for username in ("dl-clerk", "dl-other"):
        wrong = [await log_in(client, username, "wrong password") for _ in range(5)]
        assert wrong == [401] * 5
    assert await log_in(client, "dl-clerk", PASSWORD) == 429

    assert (await client.post(f"/api/v1/users/{clerk_id}/enable", headers=admin)).status_code == 200
    assert await log_in(client, "dl-clerk", PASSWORD) == 201
    # Only the enabled user's counts are cleared.
    assert await log_in(client, "dl-other", PASSWORD) == 429


async def test_enable_enabled_user_unlocks(client: AsyncTestClient[Any], admin: dict[str, str], cloud_dsn: str) -> None:
    """Enabling a user that is not disabled still clears their counts, so an admin can lift a lockout."""
    clerk_id = (await user_ids(cloud_dsn))["dl-clerk"]
    wrong = [await log_in(client, "dl-clerk", "wrong password") for _ in range(5)]
    assert wrong == [401] * 5
    assert await log_in(client, "dl-clerk", PASSWORD) == 429

    enabled = await client.post(f"/api/v1/users/{clerk_id}/enable", headers=admin)
    assert enabled.status_code == 200
    assert enabled.json()["already_enabled"] is True
    assert enabled.json()["login_failures_cleared"] == 1
    assert await log_in(client, "dl-clerk", PASSWORD) == 201
    audit = [row["action"] for row in (await client.get("/api/v1/audit", headers=admin)).json()]
    assert "user.unlock" in audit
    assert "user.enable" not in audit


async def test_cli_enable_unlocks_enabled_user(client: AsyncTestClient[Any], admin: dict[str, str], cloud_dsn: str) -> None:
    wrong = [await log_in(client, "dl-clerk", "wrong password") for _ in range(5)]
    assert wrong == [401] * 5

    enabled = await admin_cli(cloud_dsn, "user-enable", "acme", "dl-clerk")
    assert enabled.exit_code == 0, enabled.output
    assert "dl-clerk" in enabled.output
    assert "was already enabled" in enabled.output
    assert "failed log-in counts cleared for 1 client address" in enabled.output
    assert await log_in(client, "dl-clerk", PASSWORD) == 201

    again = await admin_cli(cloud_dsn, "user-enable", "acme", "dl-clerk")
    assert again.exit_code == 0, again.output
    assert "cleared for 0 client addresses" in again.output


async def test_cli_enable_after_refusals(client: AsyncTestClient[Any], admin: dict[str, str], cloud_dsn: str) -> None:
    disabled = await admin_cli(cloud_dsn, "user-disable", "acme", "dl-clerk")
    assert disabled.exit_code == 0, disabled.output

    statuses = [await log_in(client, "dl-clerk", PASSWORD) for _ in range(6)]
    assert statuses == [401] * 6

    enabled = await admin_cli(cloud_dsn, "user-enable", "acme", "dl-clerk")
    assert enabled.exit_code == 0, enabled.output
    assert "dl-clerk" in enabled.output
    assert " enabled;" in enabled.output
    assert await log_in(client, "dl-clerk", PASSWORD) == 201
