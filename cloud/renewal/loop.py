"""Periodic renewal check inside the cloud app: every contract's triggers, then delivery of the new packages."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any

import structlog

from valuegate.cloud.store import Conflict

from . import checks, service
from .targets import Network

__all__ = ("INTERVAL_ENV", "check_all", "start_job", "renewal_lifespan")

log = structlog.get_logger("valuegate.cloud.renewal")

INTERVAL_ENV = "VALUEGATE_RENEWAL_CHECK_INTERVAL_S"
DEFAULT_INTERVAL_S = 3600.0
# The first check waits a little so that start-up and the first requests are not slowed down.
FIRST_CHECK_DELAY_S = 60.0


async def check_all(pool: Any, dsn: str, *, today: dt.date, allowed_networks: Sequence[Network] = ()) -> list[int]:
    """Check every contract of every tenant once and deliver each new package; return the new package ids.

    The PDFs make a package slow to build, so each contract is checked on a connection of its own. A contract
    whose check a user started is skipped this round. A check that fails is logged and recorded on the
    contract's check page, and the next round retries it.
    """
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT DISTINCT tenant_id, id FROM contracts ORDER BY tenant_id, id")
        contracts = await cur.fetchall()
    created: list[tuple[str, int]] = []
    for tenant_id, contract_id in contracts:
        claim = await checks.claim_check(dsn, tenant_id, contract_id, actor="system")
        if claim is None:
            continue
        rows = await checks.run_check(pool, claim, today=today)
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


def start_job(app: Any, job: Coroutine[Any, Any, Any], name: str) -> None:
    """Run a renewal check that a user started as a task of the app, which :func:`renewal_lifespan` cancels at shutdown."""
    task = asyncio.create_task(job, name=name)
    jobs: set[asyncio.Task[Any]] = app.state.renewal_jobs
    jobs.add(task)
    task.add_done_callback(jobs.discard)


@contextlib.asynccontextmanager
async def renewal_lifespan(app: Any) -> AsyncIterator[None]:
    """Run the periodic check while the app runs, and cancel the checks users started at shutdown.

    ``VALUEGATE_RENEWAL_CHECK_INTERVAL_S=0`` turns the periodic check off. A
    cancelled check builds nothing, and its page shows it as interrupted.
    """
    app.state.renewal_jobs = set()
    async with _cancel_jobs(app):
        async with _periodic_check(app):
            yield


@contextlib.asynccontextmanager
async def _cancel_jobs(app: Any) -> AsyncIterator[None]:
    try:
        yield
    finally:
        running = list(app.state.renewal_jobs)
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
            log.info("renewal_jobs_cancelled", count=len(running))


@contextlib.asynccontextmanager
async def _periodic_check(app: Any) -> AsyncIterator[None]:
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
