"""Renewal-package endpoints: list the tenant's packages, read one, deliver one to the tenant's webhook again."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.background_tasks import BackgroundTask
from litestar.openapi import ResponseSpec
from litestar.params import FromPath

from ..auth import requires
from ..renewal import service as renewal
from ..renewal.delivery import DeliveryClaim
from .deps import Conn, caller

__all__ = ("PackageController",)


async def _deliver(claim: DeliveryClaim, settings: Any) -> None:
    try:
        await renewal.deliver_claimed(claim, allowed_networks=settings.webhook_networks)
    except Exception as exc:  # every attempt is already recorded; the error goes to the log, not to a caller who has had the response
        renewal.log.error("webhook_delivery_crashed", tenant=claim.tenant_id, package=claim.package_id, error=str(exc))


class PackageController(Controller):
    """Renewal-prep packages of the caller's tenant; every role reads them, delivering needs ``csm`` or ``admin``."""

    path = "/packages"
    tags = ["renewal"]
    guards = [requires()]

    @get("", summary="List renewal packages, newest first, with their contract, trigger and delivery state")
    async def packages(self, request: Request[Any, Any, Any], conn: Conn) -> list[dict[str, Any]]:
        return await renewal.tenant_packages(conn, caller(request).tenant_id)

    @get("/{package_id:int}", summary="One renewal package with its trigger, archive digest and every delivery attempt")
    async def package(self, request: Request[Any, Any, Any], conn: Conn, package_id: FromPath[int]) -> dict[str, Any]:
        return await renewal.package_detail(conn, caller(request).tenant_id, package_id)

    @post("/{package_id:int}/deliver", status_code=202, guards=[requires("csm", "admin")],
          summary="Deliver a package to the webhook again; the attempts run after the response and show on the package page",
          responses={409: ResponseSpec(None, description="A delivery of the package is still running (code `delivery_in_progress`); "
                                                         "wait until its attempts end")})
    async def deliver(self, request: Request[Any, Any, Any], conn: Conn, package_id: FromPath[int]) -> Response[dict[str, Any]]:
        principal = caller(request)
        await renewal.request_redelivery(conn, principal.tenant_id, package_id, actor=principal.actor)
        # The claim comes before the commit: a request refused because a delivery still runs leaves no audit record.
        claim = await renewal.claim_delivery(request.app.state.settings.dsn, principal.tenant_id, package_id)
        try:
            await conn.commit()
        except BaseException:
            await claim.release()
            raise
        return Response({"package": package_id, "status": "delivering"}, status_code=202, background=BackgroundTask(_deliver, claim, request.app.state.settings))
