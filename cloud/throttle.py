"""Throttling of failed log-ins per user name and client address, stored in PostgreSQL for every server process.

The counts live in the table ``login_failures`` (migration 0062), so all
``cloud serve`` processes of one database share them, and an enable in any
process (or in ``cloud admin``) clears them for all. The database clock
stamps every failure, so the servers' clocks play no part.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import structlog
from psycopg.pq import TransactionStatus

__all__ = ("LoginThrottled", "LoginAttempt", "LoginThrottle", "login_throttle", "forget_user")

log = structlog.get_logger("valuegate.cloud.auth")
Conn = psycopg.AsyncConnection[Any]


class LoginThrottled(Exception):
    """Too many failed log-ins for this user name from this client address; ``retry_after_s`` is when the next try is taken."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many failed log-ins; try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    """An attempt that :meth:`LoginThrottle.attempt` let through and recorded as a failure in advance."""

    username: str
    client: str
    attempt_at: dt.datetime
    """The database time recorded for the attempt, which identifies it in :meth:`LoginThrottle.withdraw`."""
    failures: int
    """Failures of the pair within the window, this attempt included."""
    retry_after_s: int | None
    """Seconds until the pair is unlocked when this attempt reached the limit, else None."""


@asynccontextmanager
async def _autocommit(conn: Conn) -> AsyncIterator[Conn]:
    """Run statements on ``conn`` in autocommit, so that each commits at once and holds no row lock afterwards."""
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise RuntimeError(f"the login throttle needs a connection outside a transaction, not one in state {conn.info.transaction_status.name}")
    if conn.autocommit:
        yield conn
        return
    await conn.set_autocommit(True)
    try:
        yield conn
    finally:
        # A broken connection cannot change mode. The pool discards it anyway.
        if not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE:
            await conn.set_autocommit(False)


@dataclass
class LoginThrottle:
    """Failed log-ins per (user name, client address) over a sliding window, shared through PostgreSQL.

    After ``limit`` failures within ``window_s`` seconds, log-ins of that pair are
    rejected without checking the password until the oldest of those failures
    leaves the window. :meth:`attempt` records each admitted attempt as a failure
    before the password is checked. :meth:`succeeded` and :meth:`withdraw` take that
    record back, so concurrent attempts on any number of processes cannot pass the limit.
    While an attempt is being checked, the pair's other attempts count it as a failure.
    """

    limit: int = 5
    """Failures within the window that start rejecting."""
    window_s: float = 300.0
    """Length of the sliding window in seconds."""
    prune_interval_s: float = 60.0
    """Seconds between two deletions of expired rows by this process. Each process prunes, so one that stops does not matter."""
    prune_batch: int = 10_000
    """Rows deleted by one prune at most, which bounds the delay it adds to the attempt that runs it."""
    _pruned_at: float = field(default=-math.inf, repr=False)

    def __post_init__(self) -> None:
        if self.prune_batch < 1:
            raise ValueError(f"login throttle prune_batch {self.prune_batch} must be positive; give 1 or more rows")
        if self.limit < 1 or self.window_s <= 0:
            raise ValueError(f"login throttle limit {self.limit} and window {self.window_s:g} s must be positive; give a limit of 1 or more and a window above 0")

    async def attempt(self, conn: Conn, username: str, client: str) -> LoginAttempt:
        """Record an attempt of the pair as a failure, or raise :class:`LoginThrottled` while the pair is locked.

        ``conn`` must be outside a transaction. The statement runs in autocommit, so
        its row lock ends before the password is checked. It is one statement, plus
        a :meth:`prune` once per ``prune_interval_s`` (at once again after a full batch).
        """
        async with _autocommit(conn):
            cur = await conn.execute(
                "SELECT allowed, failures, retry_after_s, attempt_at FROM login_attempt(%s, %s, %s, %s)", (username, client, self.limit, self.window_s)
            )
            allowed, failures, retry_after_s, attempt_at = await cur.fetchone()  # type: ignore[misc]
            if time.monotonic() - self._pruned_at >= self.prune_interval_s:
                try:
                    await self.prune(conn)
                except psycopg.Error as exc:
                    if conn.closed:
                        raise
                    # The log-in goes on: expired rows count nothing, and the next prune deletes them.
                    self._pruned_at = time.monotonic()
                    log.warning("login_failures_prune_failed", error=str(exc), retry_in_s=self.prune_interval_s)
        if not allowed:
            raise LoginThrottled(retry_after_s)
        return LoginAttempt(username, client, attempt_at, failures, retry_after_s)

    def failed(self, attempt: LoginAttempt) -> None:
        """Log ``login_throttled`` when this failure reached the limit. :meth:`attempt` has counted it already."""
        if attempt.retry_after_s is not None and attempt.failures == self.limit:
            log.warning(
                "login_throttled", username=attempt.username, client=attempt.client, failures=attempt.failures,
                window_s=self.window_s, retry_after_s=attempt.retry_after_s,
            )  # fmt: skip

    async def succeeded(self, conn: Conn, attempt: LoginAttempt) -> None:
        """Clear the pair's failures in the caller's transaction, which also opens the session."""
        await conn.execute("DELETE FROM login_failures WHERE username = %s AND client = %s", (attempt.username, attempt.client))

    async def withdraw(self, conn: Conn, attempt: LoginAttempt) -> None:
        """Remove the failure recorded for ``attempt`` (the right password of a disabled user), committing at once."""
        async with _autocommit(conn):
            await conn.execute(
                "UPDATE login_failures SET failed_at = array_remove(failed_at, %s) WHERE username = %s AND client = %s",
                (attempt.attempt_at, attempt.username, attempt.client),
            )

    async def prune(self, conn: Conn) -> int:
        """Delete up to ``prune_batch`` rows whose newest failure has left the window, committing at once, and return how many.

        Rows that another statement has locked are skipped, not waited for, so two
        processes pruning at once neither wait for each other nor deadlock. After a
        full batch the next attempt prunes again instead of waiting for the interval,
        so the table stays bounded however fast expired rows arrive.
        """
        async with _autocommit(conn):
            cur = await conn.execute(
                "DELETE FROM login_failures WHERE (username, client) IN (SELECT username, client FROM login_failures"
                " WHERE last_failed_at < clock_timestamp() - make_interval(secs => %s) LIMIT %s FOR UPDATE SKIP LOCKED)",
                (self.window_s, self.prune_batch),
            )
        self._pruned_at = time.monotonic() if cur.rowcount < self.prune_batch else -math.inf
        if cur.rowcount:
            log.debug("login_failures_pruned", rows=cur.rowcount, batch=self.prune_batch)
        return cur.rowcount


async def forget_user(conn: Conn, username: str) -> int:
    """Delete the failures of ``username`` from every client address in the caller's transaction, and return how many pairs."""
    cur = await conn.execute("DELETE FROM login_failures WHERE username = %s", (username,))
    return cur.rowcount


login_throttle = LoginThrottle()
"""The limits used by the API and the web log-in. The counts are in the database, so this object holds only the settings."""
