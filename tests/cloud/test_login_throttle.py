"""The failed log-in throttle on its own against a real PostgreSQL: exact counts, the window, resets, pruning and the warning.

Time is the database clock, so the tests move it by shifting the stored failure times into the past.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from structlog.testing import capture_logs

from valuegate.cloud.db import UTC_OPTIONS
from valuegate.cloud.throttle import LoginAttempt, LoginThrottle, LoginThrottled, forget_user

pytestmark = pytest.mark.postgres


async def connect(dsn: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(dsn, options=UTC_OPTIONS)


@pytest.fixture
async def conn(cloud_dsn: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await connect(cloud_dsn) as connection:
        yield connection


@pytest.fixture
def throttle() -> LoginThrottle:
    return LoginThrottle(limit=5, window_s=300)


async def fail(throttle: LoginThrottle, conn: Any, times: int, username: str = "fin1", client: str = "10.0.0.1") -> list[LoginAttempt]:
    attempts = []
    for _ in range(times):
        attempt = await throttle.attempt(conn, username, client)
        throttle.failed(attempt)
        attempts.append(attempt)
    return attempts


async def rejected_retry(throttle: LoginThrottle, conn: Any, username: str = "fin1", client: str = "10.0.0.1") -> int:
    with pytest.raises(LoginThrottled) as rejected:
        await throttle.attempt(conn, username, client)
    return rejected.value.retry_after_s


async def age(conn: Any, seconds: float) -> None:
    """Move every stored failure ``seconds`` into the past, as if that much time had gone by."""
    async with conn.transaction():
        await conn.execute(
            "UPDATE login_failures SET failed_at = ARRAY(SELECT t - make_interval(secs => %s) FROM unnest(failed_at) AS t ORDER BY t),"
            " last_failed_at = last_failed_at - make_interval(secs => %s)",
            (seconds, seconds),
        )


async def rows(conn: Any) -> dict[tuple[str, str], int]:
    async with conn.transaction():
        cur = await conn.execute("SELECT username, client, cardinality(failed_at) FROM login_failures")
        return {(username, client): count for username, client, count in await cur.fetchall()}


async def test_fifth_failure_locks_the_pair(throttle, conn) -> None:
    attempts = await fail(throttle, conn, 5)

    assert [attempt.failures for attempt in attempts] == [1, 2, 3, 4, 5]
    assert attempts[-1].retry_after_s == 300
    assert await rejected_retry(throttle, conn) == 300
    assert await rows(conn) == {("fin1", "10.0.0.1"): 5}


async def test_lock_ends_with_oldest_failure(throttle, conn) -> None:
    await fail(throttle, conn, 1)
    await age(conn, 100)
    await fail(throttle, conn, 4)
    assert await rejected_retry(throttle, conn) == 200

    await age(conn, 200)
    await fail(throttle, conn, 1)
    # The oldest failure left the window; the second oldest, 200 s old now, ends the new lock.
    assert await rejected_retry(throttle, conn) == 100


async def test_old_failures_do_not_count(throttle, conn) -> None:
    for _ in range(6):
        await fail(throttle, conn, 1)
        await age(conn, 61)

    attempt = await throttle.attempt(conn, "fin1", "10.0.0.1")
    assert attempt.failures == 5
    assert attempt.retry_after_s == 300 - 4 * 61


async def test_success_clears_the_count(throttle, conn) -> None:
    await fail(throttle, conn, 4)
    attempt = await throttle.attempt(conn, "fin1", "10.0.0.1")
    async with conn.transaction():
        await throttle.succeeded(conn, attempt)
    assert await rows(conn) == {}

    await fail(throttle, conn, 5)
    assert await rejected_retry(throttle, conn) == 300


async def test_pairs_count_apart(throttle, conn) -> None:
    await fail(throttle, conn, 5)

    assert (await throttle.attempt(conn, "fin1", "10.0.0.2")).failures == 1
    assert (await throttle.attempt(conn, "csm1", "10.0.0.1")).failures == 1
    assert await rejected_retry(throttle, conn) == 300


async def test_lock_logs_one_warning_without_the_password(throttle, conn) -> None:
    with capture_logs() as events:
        await fail(throttle, conn, 5)
        for _ in range(3):
            await rejected_retry(throttle, conn)
    throttled = [event for event in events if event["event"] == "login_throttled"]
    assert throttled == [
        {"event": "login_throttled", "log_level": "warning", "username": "fin1", "client": "10.0.0.1", "failures": 5, "window_s": 300, "retry_after_s": 300}
    ]


async def test_withdraw_removes_one_attempt(throttle, conn) -> None:
    await fail(throttle, conn, 3)
    attempt = await throttle.attempt(conn, "fin1", "10.0.0.1")
    assert attempt.failures == 4

    await throttle.withdraw(conn, attempt)
    assert await rows(conn) == {("fin1", "10.0.0.1"): 3}
    assert (await throttle.attempt(conn, "fin1", "10.0.0.1")).failures == 4


async def test_forget_user_clears_every_address(throttle, conn) -> None:
    await fail(throttle, conn, 5, client="10.0.0.1")
    await fail(throttle, conn, 5, client="10.0.0.2")
    await fail(throttle, conn, 5, username="csm1")

    async with conn.transaction():
        assert await forget_user(conn, "fin1") == 2
    assert (await throttle.attempt(conn, "fin1", "10.0.0.1")).failures == 1
    assert (await throttle.attempt(conn, "fin1", "10.0.0.2")).failures == 1
    assert await rejected_retry(throttle, conn, username="csm1") == 300


async def test_concurrent_attempts_stop_at_limit(throttle, cloud_dsn) -> None:
    """Twenty attempts at once from separate connections: five get through, although none has finished its password check."""
    connections = [await connect(cloud_dsn) for _ in range(20)]
    try:
        results = await asyncio.gather(*(throttle.attempt(c, "fin1", "10.0.0.1") for c in connections), return_exceptions=True)
    finally:
        for connection in connections:
            await connection.close()
    admitted = [result for result in results if isinstance(result, LoginAttempt)]
    rejected = [result for result in results if isinstance(result, LoginThrottled)]
    assert len(admitted) == 5
    assert len(rejected) == 15
    assert sorted(attempt.failures for attempt in admitted) == [1, 2, 3, 4, 5]


async def test_attempt_holds_no_row_lock(throttle, conn, cloud_dsn) -> None:
    """The pair's row is free again when attempt() returns, so the password hash runs without a lock held."""
    await fail(throttle, conn, 1)
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert not conn.autocommit
    async with await connect(cloud_dsn) as other:
        cur = await other.execute("SELECT cardinality(failed_at) FROM login_failures WHERE username = 'fin1' FOR UPDATE NOWAIT")
        assert await cur.fetchone() == (1,)


async def test_attempt_in_transaction_rejected(throttle, conn) -> None:
    await conn.execute("SELECT 1")
    with pytest.raises(RuntimeError, match="outside a transaction"):
        await throttle.attempt(conn, "fin1", "10.0.0.1")


async def test_prune_deletes_expired_rows(conn) -> None:
    throttle = LoginThrottle(limit=5, window_s=300, prune_interval_s=3600)
    for number in range(50):
        await fail(throttle, conn, 1, username=f"random{number}")
    await age(conn, 301)
    await fail(throttle, conn, 2, username="fin1")

    assert len(await rows(conn)) == 51
    assert await throttle.prune(conn) == 50
    assert await rows(conn) == {("fin1", "10.0.0.1"): 2}


async def test_attempt_prunes_once_per_interval(conn) -> None:
    throttle = LoginThrottle(limit=5, window_s=300, prune_interval_s=3600)
    await fail(throttle, conn, 1, username="old1")
    await age(conn, 301)
    await fail(throttle, conn, 1, username="old2")
    # The first attempt pruned while old1 was still in the window, and the next prune is an hour away.
    assert set(await rows(conn)) == {("old1", "10.0.0.1"), ("old2", "10.0.0.1")}

    due = LoginThrottle(limit=5, window_s=300, prune_interval_s=3600)
    await fail(due, conn, 1, username="fin1")
    assert set(await rows(conn)) == {("old2", "10.0.0.1"), ("fin1", "10.0.0.1")}


async def test_full_prune_batch_prunes_again(conn) -> None:
    throttle = LoginThrottle(limit=5, window_s=300, prune_interval_s=3600, prune_batch=20)
    for number in range(50):
        await fail(throttle, conn, 1, username=f"random{number}")
    await age(conn, 301)

    assert await throttle.prune(conn) == 20
    # A full batch leaves the next prune due at once: each attempt deletes another batch until one comes back short.
    await fail(throttle, conn, 1, username="fin1")
    assert len(await rows(conn)) == 11
    await fail(throttle, conn, 1, username="fin1")
    assert len(await rows(conn)) == 1
    await fail(throttle, conn, 1, username="fin1")
    assert await rows(conn) == {("fin1", "10.0.0.1"): 3}


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="limit 0 and window 300 s must be positive"):
        LoginThrottle(limit=0)
