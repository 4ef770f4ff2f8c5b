"""Operational endpoints (health, readiness, metrics) and tenant-scoped machine KPIs and audit log."""

from __future__ import annotations

import datetime as dt
from typing import Any

from litestar import Controller, Request, Response, get
from litestar.datastructures import State
from litestar.params import FromPath, Parameter, QueryParameter

from .. import reports
from ..metrics import exposition
from ..auth import requires
from ..schema_check import schema_state
from .deps import Conn, caller

__all__ = ("HealthController", "MachineController", "metrics_endpoint")



class HealthController(Controller):
    """Liveness and readiness; neither needs authentication."""

    path = ""
    tags = ["health"]

    @get("/health", summary="Liveness: the process answers")
    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/ready", summary="Readiness: the database answers and its schema is migrated")
    async def ready(self, state: State) -> Response[dict[str, Any]]:
        try:
            async with state.pool.connection(timeout=5) as conn:
                schema = await schema_state(conn)
        except Exception as exc:  # noqa: BLE001 - any failure means not ready, and the reason is returned
            return Response({"status": "unavailable", "reason": type(exc).__name__}, status_code=503)
        if problem := schema.problem():
            return Response({"status": "schema_mismatch", "reason": problem, "pending": schema.pending, "unknown": schema.unknown}, status_code=503)
        return Response({"status": "ready", "migrations": schema.applied})


class MachineController(Controller):
    """Machines named by the tenant's vouchers and their per-day KPIs from telemetry."""

    path = ""
    tags = ["machines"]
    guards = [requires()]

    @get("/machines", summary="List machines")
    async def machines(self, request: Request[Any, Any, Any], conn: Conn) -> list[dict[str, Any]]:
        return await reports.list_machines(conn, caller(request).tenant_id)

    @get("/machines/{machine_id:str}/kpis", summary="ISO 22400-2 KPIs per plant day from stored telemetry")
    async def kpis(
        self,
        request: Request[Any, Any, Any],
        conn: Conn,
        machine_id: FromPath[str],
        first: dt.date = QueryParameter(name="from"),
        last: dt.date = QueryParameter(name="to"),
    ) -> list[dict[str, Any]]:
        if last < first or (last - first).days > 3660:
            from ..store import Invalid

            raise Invalid(f"date range {first}..{last} is invalid; 'to' must not precede 'from' and the range spans at most 10 years", code="invalid_range")
        return await reports.machine_kpis(conn, caller(request).tenant_id, machine_id, first, last)

    @get("/audit", summary="Audit log of the tenant, newest first")
    async def audit(
        self,
        request: Request[Any, Any, Any],
        conn: Conn,
        limit: int = Parameter(default=100, ge=1, le=1000),
        offset: int = Parameter(default=0, ge=0, le=10_000_000),
    ) -> list[dict[str, Any]]:
        return await reports.list_audit(conn, caller(request).tenant_id, limit=limit, offset=offset)


@get("/metrics", include_in_schema=False, sync_to_thread=False)
def metrics_endpoint() -> Response[bytes]:
    body, content_type = exposition()
    return Response(body, media_type=content_type)
