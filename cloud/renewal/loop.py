"""Periodic renewal check inside the cloud app: every contract's triggers, then delivery of the new packages."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

import structlog

from valuegate.cloud.store import Conflict

from . import service
from .targets import Network

__all__ = ("INTERVAL_ENV", "check_all", "renewal_lifespan")

log = structlog.get_logger("valuegate.cloud.renewal")

INTERVAL_ENV = "VALUEGATE_RENEWAL_CHECK_INTERVAL_S"
DEFAULT_INTERVAL_S = 3600.0
# The first check waits a little so that start-up and the first requests are not slowed down.
FIRST_CHECK_DELAY_S = 60.0


async def check_all(pool: Any, dsn: str, *, today: dt.date, allowed_networks: Sequence[Network] = ()) -> list[int]:
    """Check every contract of every tenant once and deliver each new package; return the new package ids.

    The PDFs make a package slow to build, so each contract is checked on a connection of its own.
    """
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT DISTINCT tenant_id, id FROM contracts ORDER BY tenant_id, id")
        contracts = await cur.fetchall()
    created: list[tuple[str, int]] = []
    for tenant_id, contract_id in contracts:
        try:
            async with pool.connection() as conn:
                rows = await service.check_renewals(conn, tenant_id, contract_id, today=today)
        except Exception as exc:  # one broken contract must not stop the others; the next round retries it
            log.error("renewal_check_failed", tenant=tenant_id, contract=contract_id, error=str(exc))
            continue
        created += [(tenant_id, row["id"]) for row in rows]
    for tenant_id, package_id in created:
        try:
            await service.deliver_package(dsn, tenant_id, package_id, allowed_networks=allowed_networks)
        except Conflict:
            continue  # a user asked to deliver the new package first; that loop delivers it
        except Exception as exc:  # every attempt is already recorded; keep delivering the rest
            log.error("webhook_delivery_crashed", tenant=tenant_id, package=package_id, error=str(exc))
    return [package_id for _, package_id in created]


async def _run(app: Any, interval_s: float) -> None:
    await asyncio.sleep(min(FIRST_CHECK_DELAY_S, interval_s))
    while True:
        settings = app.state.settings
        new = await check_all(app.state.pool, settings.dsn, today=dt.datetime.now(dt.UTC).date(), allowed_networks=settings.webhook_networks)
        log.info("renewal_check_done", packages=len(new))
        await asyncio.sleep(interval_s)


@contextlib.asynccontextmanager
async def renewal_lifespan(app: Any) -> AsyncIterator[None]:
    """Run the periodic check while the app runs; ``VALUEGATE_RENEWAL_CHECK_INTERVAL_S=0`` turns it off."""
    raw = os.environ.get(INTERVAL_ENV, "")
    try:
        interval_s = float(raw) if raw.strip() else DEFAULT_INTERVAL_S
    except ValueError:
        log.error("renewal_interval_invalid", variable=INTERVAL_ENV, value=raw, using=DEFAULT_INTERVAL_S)
        interval_s = DEFAULT_INTERVAL_S
    if interval_s <= 0:
        log.info("renewal_check_off", variable=INTERVAL_ENV)
        yield
        return
    task = asyncio.create_task(_run(app, interval_s), name="renewal-check")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
