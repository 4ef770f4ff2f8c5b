"""A log-in or token issue that overlaps disabling the same user, against a real PostgreSQL.

Two connections take the steps in a fixed order. One transaction is held
open at the point where the race used to slip through, and the other runs
into it. The test checks which one waits and what is left afterwards.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import psycopg
import pytest

from valuegate.cloud import auth
from valuegate.cloud.db import UTC_OPTIONS

from .conftest import Gateway

pytestmark = pytest.mark.postgres
PASSWORD = "correct horse battery"


async def connect(dsn: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(dsn, options=UTC_OPTIONS)


async def make_clerk(dsn: str) -> int:
    async with await connect(dsn) as conn:
        async with conn.transaction():
            await auth.create_user(conn, "acme", "boss", PASSWORD, ["admin"])
            return int((await auth.create_user(conn, "acme", "clerk", PASSWORD, ["finance"]))["id"])


async def count(dsn: str, sql: str, *params: Any) -> int:
    async with await connect(dsn) as conn:
        return int((await (await conn.execute(sql, params)).fetchone())[0])  # type: ignore[index]


async def still_waiting(task: asyncio.Task[Any]) -> bool:
    await asyncio.sleep(0.5)
    return not task.done()


async def test_login_during_disable_fails(two_tenants: tuple[Gateway, Gateway], cloud_dsn: str) -> None:
    clerk = await make_clerk(cloud_dsn)
    disabling = await connect(cloud_dsn)
    try:
        await auth.disable_user(disabling, "acme", clerk, actor="boss")  # not committed yet
        logging_in = await connect(cloud_dsn)
        login = asyncio.create_task(auth.login(logging_in, "clerk", PASSWORD, max_age_s=3600, throttle=auth.LoginThrottle()))
        assert await still_waiting(login)  # the password matched; the session waits for the user's row
        await disabling.commit()
        with pytest.raises(auth.LoginFailed):
            await login
        await logging_in.rollback()
        await logging_in.close()
    finally:
        await disabling.close()
    assert await count(cloud_dsn, "SELECT count(*) FROM sessions WHERE user_id = %s", clerk) == 0


async def test_disable_during_login_ends_the_new_session(two_tenants: tuple[Gateway, Gateway], cloud_dsn: str) -> None:
    clerk = await make_clerk(cloud_dsn)
    logging_in = await connect(cloud_dsn)
    try:
        await auth.login(logging_in, "clerk", PASSWORD, max_age_s=3600, throttle=auth.LoginThrottle())  # session inserted, not committed
        disabling = await connect(cloud_dsn)
        disable = asyncio.create_task(auth.disable_user(disabling, "acme", clerk, actor="boss"))
        assert await still_waiting(disable)
        await logging_in.commit()
        await disable
        await disabling.commit()
        await disabling.close()
    finally:
        await logging_in.close()
    assert await count(cloud_dsn, "SELECT count(*) FROM sessions WHERE user_id = %s", clerk) == 0
    assert await count(cloud_dsn, "SELECT count(*) FROM users WHERE id = %s AND disabled", clerk) == 1


async def test_token_issued_during_disable_is_revoked(two_tenants: tuple[Gateway, Gateway], cloud_dsn: str) -> None:
    clerk = await make_clerk(cloud_dsn)
    issuing = await connect(cloud_dsn)
    try:
        await auth.issue_token(issuing, "acme", clerk, "erp")  # not committed yet
        disabling = await connect(cloud_dsn)
        disable = asyncio.create_task(auth.disable_user(disabling, "acme", clerk, actor="boss"))
        assert await still_waiting(disable)
        await issuing.commit()
        await disable
        await disabling.commit()
        await disabling.close()
    finally:
        await issuing.close()
    assert await count(cloud_dsn, "SELECT count(*) FROM api_tokens WHERE user_id = %s AND revoked_at IS NULL", clerk) == 0

    # And the other order: the disable locks the row, so the issue waits and is rejected.
    async with await connect(cloud_dsn) as conn:
        await auth.enable_user(conn, "acme", clerk)
        await conn.commit()
    disabling = await connect(cloud_dsn)
    try:
        await auth.disable_user(disabling, "acme", clerk, actor="boss")
        issuing = await connect(cloud_dsn)
        issue = asyncio.create_task(auth.issue_token(issuing, "acme", clerk, "erp-2"))
        assert await still_waiting(issue)
        await disabling.commit()
        with pytest.raises(auth.Invalid) as refused:
            await issue
        assert refused.value.code == "user_disabled"
        await issuing.close()
    finally:
        await disabling.close()
    assert await count(cloud_dsn, "SELECT count(*) FROM api_tokens WHERE user_id = %s AND revoked_at IS NULL", clerk) == 0


async def test_password_checked_off_the_event_loop(two_tenants: tuple[Gateway, Gateway], cloud_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2 runs in a worker thread, so a log-in does not hold up the other requests of the process."""
    await make_clerk(cloud_dsn)
    threads: list[int] = []
    real = auth._hasher

    class Spy:
        def verify(self, digest: str, password: str) -> bool:
            threads.append(threading.get_ident())
            return real.verify(digest, password)

    monkeypatch.setattr(auth, "_hasher", Spy())
    async with await connect(cloud_dsn) as conn:
        await auth.login(conn, "clerk", PASSWORD, max_age_s=3600, throttle=auth.LoginThrottle())
    assert len(threads) == 1
    assert threads[0] != threading.get_ident()


async def test_repeated_revoke_and_disable_audited_once(two_tenants: tuple[Gateway, Gateway], cloud_dsn: str) -> None:
    clerk = await make_clerk(cloud_dsn)
    async with await connect(cloud_dsn) as conn:
        row, _ = await auth.issue_token(conn, "acme", clerk, "erp")
        for _ in range(3):
            assert (await auth.revoke_token(conn, "acme", row["id"]))["revoked_at"] is not None
            assert (await auth.disable_user(conn, "acme", clerk))["disabled"]
        await conn.commit()
    assert await count(cloud_dsn, "SELECT count(*) FROM audit_log WHERE action = 'token.revoke'") == 1
    assert await count(cloud_dsn, "SELECT count(*) FROM audit_log WHERE action = 'user.disable'") == 1


async def test_audit_listed_in_write_order(two_tenants: tuple[Gateway, Gateway], cloud_dsn: str) -> None:
    """A record written late in a long transaction is listed before earlier ones, with its own later time."""
    from valuegate.cloud import reports, store

    early = await connect(cloud_dsn)
    try:
        await early.execute("SELECT 1")  # the transaction, and now(), begin here
        await asyncio.sleep(0.05)
        async with await connect(cloud_dsn) as other:
            await store.audit(other, tenant_id="acme", actor="a", action="test.first", object_type="x", object_id="1")
            await other.commit()
        await asyncio.sleep(0.05)
        await store.audit(early, tenant_id="acme", actor="b", action="test.second", object_type="x", object_id="2")
        await early.commit()
    finally:
        await early.close()
    async with await connect(cloud_dsn) as conn:
        listed = [row for row in await reports.list_audit(conn, "acme") if row["action"].startswith("test.")]
    assert [row["action"] for row in listed] == ["test.second", "test.first"]
    assert listed[0]["at"] > listed[1]["at"]
