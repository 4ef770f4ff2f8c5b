"""Registry endpoints: the caller's tenant, its sites, gateways and gateway keys."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, patch, post
from litestar.params import FromPath, JSONBody

from .. import store
from ..auth import requires
from .deps import Conn, caller
from .schemas import GatewayIn, KeyIn, KeyRevokeIn, KeyValidFromIn, RotationIn, SiteIn, TenantPatch

__all__ = ("RegistryController",)


class RegistryController(Controller):
    """Tenant, sites, gateways and keys; reading needs any role, changing needs ``admin``."""

    path = ""
    tags = ["registry"]
    guards = [requires()]

    @get("/tenant", summary="The caller's tenant")
    async def tenant(self, request: Request[Any, Any, Any], conn: Conn) -> dict[str, Any]:
        return await store.get_tenant(conn, caller(request).tenant_id)

    @patch("/tenant", guards=[requires("admin")], summary="Rename the caller's tenant")
    async def rename_tenant(self, request: Request[Any, Any, Any], conn: Conn, data: JSONBody[TenantPatch]) -> dict[str, Any]:
        principal = caller(request)
        await conn.execute("UPDATE tenants SET name = %s WHERE id = %s", (data.name, principal.tenant_id))
        await store.audit(conn, tenant_id=principal.tenant_id, actor=principal.actor, action="tenant.rename", object_type="tenant", object_id=principal.tenant_id, detail={"name": data.name})
        return await store.get_tenant(conn, principal.tenant_id)

    @get("/sites", summary="List sites")
    async def sites(self, request: Request[Any, Any, Any], conn: Conn) -> list[dict[str, Any]]:
        return await store.list_sites(conn, caller(request).tenant_id)

    @post("/sites", guards=[requires("admin")], summary="Create a site")
    async def create_site(self, request: Request[Any, Any, Any], conn: Conn, data: JSONBody[SiteIn]) -> dict[str, Any]:
        principal = caller(request)
        return await store.create_site(conn, principal.tenant_id, data.id, data.name or data.id, data.time_zone, actor=principal.actor)

    @get("/sites/{site_id:str}", summary="One site")
    async def site(self, request: Request[Any, Any, Any], conn: Conn, site_id: FromPath[str]) -> dict[str, Any]:
        return await store.get_site(conn, caller(request).tenant_id, site_id)

    @get("/gateways", summary="List gateways with their chain position")
    async def gateways(self, request: Request[Any, Any, Any], conn: Conn) -> list[dict[str, Any]]:
        return await store.list_gateways(conn, caller(request).tenant_id)

    @post("/gateways", guards=[requires("admin")], summary="Register a gateway")
    async def create_gateway(self, request: Request[Any, Any, Any], conn: Conn, data: JSONBody[GatewayIn]) -> dict[str, Any]:
        principal = caller(request)
        return await store.create_gateway(conn, principal.tenant_id, data.site_id, data.id, data.name, actor=principal.actor)

    @get("/gateways/{gateway_id:str}", summary="One gateway with its chain position")
    async def gateway(self, request: Request[Any, Any, Any], conn: Conn, gateway_id: FromPath[str]) -> dict[str, Any]:
        return await store.get_gateway(conn, caller(request).tenant_id, gateway_id)

    @get("/gateways/{gateway_id:str}/keys", summary="List a gateway's keys")
    async def keys(self, request: Request[Any, Any, Any], conn: Conn, gateway_id: FromPath[str]) -> list[dict[str, Any]]:
        return await store.list_gateway_keys(conn, caller(request).tenant_id, gateway_id)

    @post("/gateways/{gateway_id:str}/keys", guards=[requires("admin")], summary="Register a gateway key")
    async def add_key(self, request: Request[Any, Any, Any], conn: Conn, gateway_id: FromPath[str], data: JSONBody[KeyIn]) -> dict[str, Any]:
        principal = caller(request)
        return await store.add_gateway_key(
            conn, principal.tenant_id, gateway_id, data.public_key, valid_from=data.valid_from, valid_until=data.valid_until, actor=principal.actor
        )

    @post("/gateways/{gateway_id:str}/keys/{key_id:int}/revoke", guards=[requires("admin")], status_code=200, summary="Revoke a gateway key")
    async def revoke_key(self, request: Request[Any, Any, Any], conn: Conn, gateway_id: FromPath[str], key_id: FromPath[int], data: JSONBody[KeyRevokeIn]) -> dict[str, Any]:
        principal = caller(request)
        return await store.revoke_gateway_key(conn, principal.tenant_id, gateway_id, key_id, data.reason, force=data.force, actor=principal.actor)

    @post("/gateways/{gateway_id:str}/keys/{key_id:int}/valid-from", guards=[requires("admin")], status_code=200, summary="Move a gateway key's validity start earlier")
    async def move_key_valid_from(
        self, request: Request[Any, Any, Any], conn: Conn, gateway_id: FromPath[str], key_id: FromPath[int], data: JSONBody[KeyValidFromIn]
    ) -> dict[str, Any]:
        principal = caller(request)
        return await store.move_key_valid_from(conn, principal.tenant_id, gateway_id, key_id, data.valid_from, reason=data.reason, actor=principal.actor)

    @post("/gateways/{gateway_id:str}/rotations", guards=[requires("admin")], summary="Register the next key from a rotation statement signed by the current key")
    async def rotate_key(self, request: Request[Any, Any, Any], conn: Conn, gateway_id: FromPath[str], data: JSONBody[RotationIn]) -> dict[str, Any]:
        principal = caller(request)
        return await store.register_rotation(conn, principal.tenant_id, gateway_id, data.statement, actor=principal.actor)
