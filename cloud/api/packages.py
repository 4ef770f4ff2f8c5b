"""Renewal-package endpoints: deliver a package to the tenant's webhook again."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, post
from litestar.background_tasks import BackgroundTask
from litestar.params import FromPath

from ..auth import requires
from ..renewal import service as renewal
from .deps import Conn, caller

__all__ = ("PackageController",)


async def _deliver(dsn: str, tenant_id: str, package_id: int) -> None:
    try:
        await renewal.deliver_package(dsn, tenant_id, package_id)
    except Exception as exc:  # every attempt is already recorded; the error goes to the log, not to a caller who has had the response
        renewal.log.error("webhook_delivery_crashed", tenant=tenant_id, package=package_id, error=str(exc))


class PackageController(Controller):
    """Renewal-prep packages of the caller's tenant; delivering needs ``csm`` or ``admin``."""

    path = "/packages"
    tags = ["renewal"]
    guards = [requires("csm", "admin")]

    @post("/{package_id:int}/deliver", status_code=202,
          summary="Deliver a package to the webhook again; the attempts run after the response and show on the package page")
    async def deliver(self, request: Request[Any, Any, Any], conn: Conn, package_id: FromPath[int]) -> Response[dict[str, Any]]:
        principal = caller(request)
        await renewal.request_redelivery(conn, principal.tenant_id, package_id, actor=principal.actor)
        await conn.commit()
        task = BackgroundTask(_deliver, request.app.state.settings.dsn, principal.tenant_id, package_id)
        return Response({"package": package_id, "status": "delivering"}, status_code=202, background=task)
