"""Renewal checks as background jobs: one check at a time per contract, its progress and outcome in ``renewal_checks``.

A check with a year of data takes minutes, mostly for the voucher bundle and
the PDF summaries. So the contract page starts it and returns at once, and
the check's page shows its step. The periodic check in
:mod:`valuegate.cloud.renewal.loop` goes through the same claim, so a check
started by hand and the periodic one never build a contract's packages at
the same time.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import psycopg
import structlog
from psycopg.types.json import Jsonb

from valuegate.cloud.actors import name_sql

from .delivery import fetch_dicts
from .service import check_renewals
from .triggers import Firing

__all__ = ("CheckClaim", "check_lock_key", "claim_check", "run_check", "check_state")

log = structlog.get_logger("valuegate.cloud.renewal")
Conn = psycopg.AsyncConnection[Any]


def check_lock_key(tenant_id: str, contract_id: str) -> str:
    """Return the text whose ``hashtextextended`` is the advisory lock key of a contract's renewal check."""
    return "renewal_check:" + json.dumps([tenant_id, contract_id], ensure_ascii=False)


class CheckClaim:
    """The right to run a contract's renewal check: a session advisory lock on an autocommit connection of its own.

    The check's progress is written through the same connection, so the page
    reads each step while the check's own transaction is still open. The lock
    ends when :meth:`release` closes the connection, or with the process.
    """

    def __init__(self, conn: Conn, tenant_id: str, contract_id: str, actor: str) -> None:
        self.conn = conn
        self.tenant_id = tenant_id
        self.contract_id = contract_id
        self.actor = actor

    async def step(self, name: str, number: int, count: int) -> None:
        """Record the step the check has reached."""
        await self.conn.execute(
            "UPDATE renewal_checks SET step = %s, step_number = %s, step_count = %s, step_started_at = now() WHERE tenant_id = %s AND contract_id = %s",
            (name, number, count, self.tenant_id, self.contract_id),
        )

    async def finish(self, *, packages: list[int], waiting: list[Firing], error: str | None) -> None:
        """Record the check's outcome: the packages it built and the triggers waiting for vouchers, or the error that stopped it."""
        await self.conn.execute(
            "UPDATE renewal_checks SET state = %s, finished_at = now(), packages = %s, waiting = %s, error = %s WHERE tenant_id = %s AND contract_id = %s",
            ("failed" if error is not None else "done", packages, Jsonb([{"key": f.key, "kind": f.kind, "detail": f.detail} for f in waiting]), error,
             self.tenant_id, self.contract_id),
        )

    async def release(self) -> None:
        """Close the connection and with it the lock; safe to call twice."""
        if not self.conn.closed:
            await self.conn.close()


async def claim_check(dsn: str, tenant_id: str, contract_id: str, *, actor: str) -> CheckClaim | None:
    """Take the contract's check lock and record a running check; return None, starting nothing, while another check runs.

    The lock is taken at once or not at all, so a second click gets its page at once.
    """
    from valuegate.cloud.db import UTC_OPTIONS

    conn = await psycopg.AsyncConnection.connect(dsn, options=UTC_OPTIONS, autocommit=True)
    try:
        cur = await conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (check_lock_key(tenant_id, contract_id),))
        locked = (await cur.fetchone() or (False,))[0]
        if not locked:
            await conn.close()
            log.info("renewal_check_running", tenant=tenant_id, contract=contract_id, requested_by=actor)
            return None
        # The triggers waiting for vouchers stay listed until this check has evaluated them again.
        await conn.execute(
            "INSERT INTO renewal_checks (tenant_id, contract_id, state, requested_by, step, step_number, step_count, started_at, step_started_at)"
            " VALUES (%s, %s, 'running', %s, 'queued', 0, 1, now(), now())"
            " ON CONFLICT (tenant_id, contract_id) DO UPDATE SET state = 'running', requested_by = excluded.requested_by, step = 'queued',"
            " step_number = 0, step_count = 1, started_at = now(), step_started_at = now(), finished_at = NULL, packages = '{}', error = NULL",
            (tenant_id, contract_id, actor),
        )
    except BaseException:
        await conn.close()
        raise
    log.info("renewal_check_started", tenant=tenant_id, contract=contract_id, requested_by=actor)
    return CheckClaim(conn, tenant_id, contract_id, actor)


async def run_check(pool: Any, claim: CheckClaim, *, today: dt.date) -> list[dict[str, Any]]:
    """Run a claimed check on a pooled connection, record its outcome and release the claim; return the new packages.

    An error is recorded and logged, and the check returns no package, so
    that the caller can go on with other contracts.
    """
    waiting: list[Firing] = []
    created: list[dict[str, Any]] = []
    error: str | None = None
    try:
        try:
            async with pool.connection() as conn:
                created = await check_renewals(conn, claim.tenant_id, claim.contract_id, today=today, actor=claim.actor, report=claim.step,
                                               waiting=waiting)
                await conn.commit()
        except Exception as exc:  # recorded for the check's page; the next check tries again
            log.error("renewal_check_failed", tenant=claim.tenant_id, contract=claim.contract_id, error=str(exc))
            error, created, waiting = str(exc) or type(exc).__name__, [], []
        await claim.finish(packages=[row["id"] for row in created], waiting=waiting, error=error)
    finally:
        # Also on cancellation at shutdown: the lock ends with the connection, and the page shows the check as interrupted.
        await claim.release()
    log.info("renewal_check_finished", tenant=claim.tenant_id, contract=claim.contract_id, packages=len(created), waiting=len(waiting), failed=error is not None)
    return created


async def check_state(conn: Conn, tenant_id: str, contract_id: str) -> dict[str, Any] | None:
    """Return the contract's latest check, or None before the first one.

    ``state`` is ``running``, ``done``, ``failed``, or ``interrupted`` for a
    check whose process stopped before it finished (its lock is gone).
    ``elapsed_s`` and ``step_elapsed_s`` count the seconds since the check
    and its current step started, up to the end of a finished check.
    ``requested_by_name`` is the current name of the user who started it, for display.
    """
    rows = await fetch_dicts(
        conn,
        f"SELECT c.*, {name_sql('c', 'requested_by')} AS requested_by_name,"
        " extract(epoch FROM coalesce(c.finished_at, now()) - c.started_at) AS elapsed_s,"
        " extract(epoch FROM coalesce(c.finished_at, now()) - c.step_started_at) AS step_elapsed_s,"
        " EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND l.classid::bigint = (hashtextextended(%s, 0) >> 32) & 4294967295 AND l.objid::bigint = hashtextextended(%s, 0) & 4294967295) AS locked"
        " FROM renewal_checks c WHERE c.tenant_id = %s AND c.contract_id = %s",
        (check_lock_key(tenant_id, contract_id), check_lock_key(tenant_id, contract_id), tenant_id, contract_id),
    )
    if not rows:
        return None
    row = rows[0]
    if row["state"] == "running" and not row.pop("locked"):
        row["state"] = "interrupted"
    row.pop("locked", None)
    row["elapsed_s"] = float(row["elapsed_s"])
    row["step_elapsed_s"] = float(row["step_elapsed_s"])
    return row
