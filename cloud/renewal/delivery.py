"""Webhook delivery of stored renewal packages, one delivery loop per package at a time, with every attempt recorded."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import psycopg
import structlog
from psycopg.rows import dict_row

from valuegate.cloud.store import Conflict, Invalid, NotFound, audit

from .targets import Network, mask_url
from .webhook import Attempt, RetryPolicy, deliver

__all__ = ("DeliveryClaim", "fetch_dicts", "claim_delivery", "delivery_lock_key", "deliver_claimed", "deliver_package", "get_package", "request_redelivery", "set_endpoint")

log = structlog.get_logger("valuegate.cloud.renewal")
Conn = psycopg.AsyncConnection[Any]


async def fetch_dicts(conn: Conn, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    """Run ``sql`` and return its rows as dicts."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(sql, params)
    return await cur.fetchall()


async def get_package(conn: Conn, tenant_id: str, package_id: int) -> dict[str, Any]:
    rows = await fetch_dicts(conn, "SELECT * FROM renewal_packages WHERE tenant_id = %s AND id = %s", (tenant_id, package_id))
    if not rows:
        raise NotFound(f"renewal package {package_id} not found")
    return rows[0]


async def set_endpoint(conn: Conn, tenant_id: str, url: str, secret: str, *, actor: str) -> None:
    """Set the tenant's webhook; the secret is stored for signing and never written to the audit log, which shows the URL masked."""
    await conn.execute(
        "INSERT INTO webhook_endpoints (tenant_id, url, secret) VALUES (%s, %s, %s)"
        " ON CONFLICT (tenant_id) DO UPDATE SET url = excluded.url, secret = excluded.secret, enabled = true, updated_at = now()",
        (tenant_id, url, secret),
    )
    await audit(conn, tenant_id=tenant_id, actor=actor, action="webhook.set", object_type="webhook_endpoint", object_id=tenant_id, detail={"url": mask_url(url)})


class DeliveryClaim:
    """The right to run the one delivery loop of a package: a PostgreSQL session advisory lock on a connection of its own.

    The lock ends when :meth:`release` closes the connection, or when the
    connection is lost with the process that held it, so that a crash never
    leaves a package that cannot be delivered again.
    """

    def __init__(self, conn: Conn, tenant_id: str, package_id: int) -> None:
        self.conn = conn
        self.tenant_id = tenant_id
        self.package_id = package_id

    async def release(self) -> None:
        """Close the connection and with it the lock; safe to call twice."""
        if not self.conn.closed:
            await self.conn.close()


def delivery_lock_key(package_id: int) -> str:
    """Return the text whose ``hashtextextended`` is the advisory lock key of a package's delivery."""
    return f"renewal_delivery:{package_id}"


async def claim_delivery(dsn: str, tenant_id: str, package_id: int) -> DeliveryClaim:
    """Take the delivery lock of a package, or raise :class:`Conflict` (code ``delivery_in_progress``) while another loop runs.

    The lock is taken at once or not at all, so a second request gets its
    response without waiting for the minutes that a delivery with retries takes.
    """
    from valuegate.cloud.db import UTC_OPTIONS

    conn = await psycopg.AsyncConnection.connect(dsn, options=UTC_OPTIONS, autocommit=True)
    try:
        cur = await conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (delivery_lock_key(package_id),))
        taken = (await cur.fetchone() or (False,))[0]
    except BaseException:
        await conn.close()
        raise
    if not taken:
        await conn.close()
        log.info("webhook_delivery_running", tenant=tenant_id, package=package_id)
        error = Conflict(f"renewal package {package_id} is already being delivered; wait until its attempts end (the package page lists them), "
                         "then deliver it again if it still has not arrived", code="delivery_in_progress")
        error.params = {"package": str(package_id)}  # type: ignore[attr-defined]
        raise error
    log.info("webhook_delivery_claimed", tenant=tenant_id, package=package_id)
    return DeliveryClaim(conn, tenant_id, package_id)


async def request_redelivery(conn: Conn, tenant_id: str, package_id: int, *, actor: str) -> dict[str, Any]:
    """Check that a package can be delivered again and write the request to the audit log.

    The caller then runs :func:`deliver_package`. A delivery whose attempts ran
    out, or a package built before the tenant set a webhook, is sent only on
    such a request. Raises :class:`NotFound` for
    another tenant's package and :class:`Invalid` (code ``webhook_not_set``)
    when the tenant has no webhook.
    """
    package = await get_package(conn, tenant_id, package_id)
    endpoints = await fetch_dicts(conn, "SELECT url FROM webhook_endpoints WHERE tenant_id = %s AND enabled", (tenant_id,))
    if not endpoints:
        error = Invalid(f"renewal package {package_id} cannot be delivered: tenant {tenant_id!r} has no webhook; an administrator sets one on the "
                        "contracts page first", code="webhook_not_set")
        error.params = {"package": str(package_id)}  # type: ignore[attr-defined]
        raise error
    detail = {"contract": package["contract_id"], "trigger": package["trigger_key"], "url": mask_url(endpoints[0]["url"])}
    # The audit record commits only if the caller then claims the delivery; claim_delivery logs the outcome either way.
    await audit(conn, tenant_id=tenant_id, actor=actor, action="renewal.redeliver", object_type="renewal_package", object_id=str(package_id), detail=detail)
    return package


async def deliver_package(dsn: str, tenant_id: str, package_id: int, *, policy: RetryPolicy = RetryPolicy(),
                          allowed_networks: Sequence[Network] = ()) -> bool | None:
    """Claim a package and deliver it (see :func:`deliver_claimed`); raises :class:`Conflict` while another loop delivers it."""
    return await deliver_claimed(await claim_delivery(dsn, tenant_id, package_id), policy=policy, allowed_networks=allowed_networks)


async def deliver_claimed(claim: DeliveryClaim, *, policy: RetryPolicy = RetryPolicy(), allowed_networks: Sequence[Network] = ()) -> bool | None:
    """Deliver a claimed package to the tenant's webhook, recording every attempt, and release the claim; None when no webhook is set.

    Deliveries connect only to public addresses and to ``allowed_networks``
    (the setting ``webhook_allowed_networks``). Each attempt is recorded at
    once on the claim's autocommit connection, so that the record survives a
    crash during the backoff.
    """
    try:
        return await _deliver(claim, policy, allowed_networks)
    finally:
        await claim.release()


async def _deliver(claim: DeliveryClaim, policy: RetryPolicy, allowed_networks: Sequence[Network]) -> bool | None:
    conn, tenant_id, package_id = claim.conn, claim.tenant_id, claim.package_id
    package = await get_package(conn, tenant_id, package_id)
    endpoints = await fetch_dicts(conn, "SELECT url, secret FROM webhook_endpoints WHERE tenant_id = %s AND enabled", (tenant_id,))
    if not endpoints:
        log.info("webhook_not_configured", tenant=tenant_id, package=package_id)
        return None
    endpoint = endpoints[0]

    async def record(attempt: Attempt) -> None:
        # A delivery started again numbers its attempts on from the earlier ones, so the package page lists them in order.
        # The number is taken in the same statement, under the claim, so no two attempts share one.
        await conn.execute(
            "INSERT INTO webhook_deliveries (package_id, tenant_id, url, attempt, status_code, error, delivered, started_at, duration_ms)"
            " SELECT %s, %s, %s, coalesce(max(attempt), 0) + 1, %s, %s, %s, to_timestamp(%s), %s FROM webhook_deliveries WHERE package_id = %s",
            (package_id, tenant_id, attempt.url, attempt.status_code, attempt.error, attempt.delivered, attempt.started_at, attempt.duration_ms,
             package_id),
        )

    headers = {
        "Content-Type": "application/zip",
        "X-Valuegate-Package": str(package_id),
        "X-Valuegate-Contract": package["contract_id"],
        "X-Valuegate-Trigger": package["trigger_key"],
        "X-Valuegate-Archive-Sha256": package["archive_sha256"],
        "Idempotency-Key": hashlib.sha256(f"{tenant_id}:{package_id}:{package['archive_sha256']}".encode()).hexdigest(),
    }
    return await deliver(endpoint["url"], endpoint["secret"], bytes(package["archive"]), headers=headers, record=record, policy=policy,
                         allowed_networks=allowed_networks)
