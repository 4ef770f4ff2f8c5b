"""Periodic renewal check inside the cloud app: every contract's triggers, then delivery of the new packages."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any

import structlog

from valuegate.cloud.settings import LEGACY_RENEWAL_INTERVAL_ENV, RENEWAL_INTERVAL_ENV
from valuegate.cloud.store import Conflict

from . import checks, service
from .targets import Network

__all__ = ("check_all", "start_job", "renewal_lifespan")

log = structlog.get_logger("valuegate.cloud.renewal")

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

    The setting ``renewal_check_interval_s`` sets its interval, and 0 turns it
    off. A cancelled check builds nothing, and its page shows it as interrupted.
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
    if os.environ.get(LEGACY_RENEWAL_INTERVAL_ENV, "").strip():
        used = RENEWAL_INTERVAL_ENV not in os.environ
        log.warning(
            "renewal_interval_variable_deprecated",
            variable=LEGACY_RENEWAL_INTERVAL_ENV,
            detail=f"use the setting renewal_check_interval_s in cloud.yaml or {RENEWAL_INTERVAL_ENV} instead; "
            + ("the old variable still sets the interval" if used else f"the old variable is ignored, because {RENEWAL_INTERVAL_ENV} is set"),
        )
    interval_s = app.state.settings.renewal_check_interval_s
    if interval_s == 0:
        log.info("renewal_check_off", setting="renewal_check_interval_s")
        yield
        return
    task = asyncio.create_task(_run(app, interval_s), name="renewal-check")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
