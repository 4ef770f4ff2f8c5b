"""Contract endpoints: upload, read, realized value, and the contract's vouchers with their verification state."""

from __future__ import annotations

from typing import Any, Literal

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath, JSONBody, Parameter, QueryParameter

from .. import contracts, record_export, reports
from ..auth import requires
from .deps import Conn, caller
from .schemas import ContractIn

__all__ = ("ContractController", "VoucherController")

VoucherState = Literal["verified", "reproduced", "mismatch", "gap", "rejected"]


class ContractController(Controller):
    """Contracts of the caller's tenant; uploading needs ``admin``."""

    path = "/contracts"
    tags = ["contracts"]
    guards = [requires()]

    @get("", summary="List contracts (the revision in force of each)")
    async def contracts(self, request: Request[Any, Any, Any], conn: Conn) -> list[dict[str, Any]]:
        return await contracts.list_contracts(conn, caller(request).tenant_id)

    @post("", guards=[requires("admin")], summary="Upload a contract (YAML or JSON text); the same text again changes nothing")
    async def upload(self, request: Request[Any, Any, Any], conn: Conn, data: JSONBody[ContractIn]) -> Response[dict[str, Any]]:
        principal = caller(request)
        row, created = await contracts.upload_contract(conn, principal.tenant_id, data.source, actor=principal.actor)
        return Response(row, status_code=201 if created else 200)

    @get("/{contract_id:str}", summary="The contract in force")
    async def contract(self, request: Request[Any, Any, Any], conn: Conn, contract_id: FromPath[str]) -> dict[str, Any]:
        return await contracts.get_contract(conn, caller(request).tenant_id, contract_id)

    @get(
        "/{contract_id:str}/value", summary="Realized value per anchor over counted vouchers, priced by the contract",
        description=(
            "`rejected` counts the distinct vouchers rejected for this contract that no stored voucher has superseded. Each anchor's "
            "`vouchers.rejected` counts those of them whose latest rejected payload names that anchor, so the anchors' counts add up to "
            "`rejected` unless a payload names no anchor of the current revision. A rejection counts for a contract only when a key of "
            "its gateway signed the claims, so `key_revoked` and `key_unknown` rejections count in neither. `vouchers.gap` counts "
            "stored vouchers that wait behind a gap in their gateway's chain."
        ),
    )
    async def value(self, request: Request[Any, Any, Any], conn: Conn, contract_id: FromPath[str]) -> dict[str, Any]:
        return await reports.contract_value(conn, caller(request).tenant_id, contract_id)

    @get(
        "/{contract_id:str}/vouchers", summary="The contract's vouchers with their verification state",
        description=(
            "Returns `items` (newest plant date first), the `limit` and `offset` that were applied, and `total`, the number of vouchers "
            "that match `state` and `anchor` before `limit` and `offset` are applied. The next page starts at `offset + limit`, and "
            "there is none once that reaches `total`. With `state=rejected`, `items` and `total` cover the rejections that no stored "
            "voucher superseded."
        ),
    )
    async def vouchers(
        self,
        request: Request[Any, Any, Any],
        conn: Conn,
        contract_id: FromPath[str],
        state_filter: VoucherState | None = QueryParameter(name="state", default=None),
        anchor: str | None = Parameter(default=None, max_length=200),
        limit: int = Parameter(default=100, ge=1, le=1000),
        offset: int = Parameter(default=0, ge=0, le=10_000_000),
    ) -> dict[str, Any]:
        return await reports.contract_vouchers(conn, caller(request).tenant_id, contract_id, state=state_filter, anchor=anchor, limit=limit, offset=offset)


class VoucherController(Controller):
    """Single vouchers and rejected payloads of the caller's tenant."""

    path = ""
    tags = ["vouchers"]
    guards = [requires()]

    @get("/vouchers/{voucher_id:str}", summary="One voucher with its signed document and state")
    async def voucher(self, request: Request[Any, Any, Any], conn: Conn, voucher_id: FromPath[str]) -> dict[str, Any]:
        return await reports.get_voucher(conn, caller(request).tenant_id, voucher_id)

    @get("/vouchers/{voucher_id:str}/records", media_type="application/x-ndjson",
         summary="The stored minute records the voucher's evidence root covers, one RFC 8785 record a line, in the root's order")
    async def voucher_records(self, request: Request[Any, Any, Any], conn: Conn, voucher_id: FromPath[str]) -> Response[bytes]:
        body, count = await record_export.voucher_records(conn, caller(request).tenant_id, voucher_id)
        return Response(body, media_type="application/x-ndjson", headers={"X-Record-Count": str(count)})

    @get("/rejections", summary="Rejected ingest messages, newest first")
    async def rejections(
        self,
        request: Request[Any, Any, Any],
        conn: Conn,
        limit: int = Parameter(default=100, ge=1, le=1000),
        offset: int = Parameter(default=0, ge=0, le=10_000_000),
    ) -> list[dict[str, Any]]:
        return await reports.list_rejections(conn, caller(request).tenant_id, limit=limit, offset=offset)
