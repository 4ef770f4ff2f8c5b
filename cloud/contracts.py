"""Contract repository: uploads of contract YAML or JSON, kept as numbered revisions per tenant."""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from valuegate.edge.protocol.canonical import content_digest
from valuegate.edge.protocol.contract import Contract, ContractError, parse_contract, parse_contract_text

from .store import Invalid, NotFound, audit, get_tenant

__all__ = ("upload_contract", "parse_stored", "list_contracts", "get_contract", "current_contract")

Conn = psycopg.AsyncConnection[Any]


def _parse(source: str) -> Contract:
    try:
        return parse_contract_text(source, file="uploaded contract")
    except ContractError as exc:
        raise Invalid(str(exc), code="invalid_contract") from exc


def parse_stored(document: Any, contract_id: str, revision: int) -> Contract:
    """Parse a stored revision; one that today's checks reject (for example a price of zero or less) raises :class:`Invalid`."""
    try:
        return parse_contract(document, file=f"contract {contract_id} revision {revision}")
    except ContractError as exc:
        msg = f"{exc}; this stored revision no longer passes the contract checks, so upload a corrected revision"
        raise Invalid(msg, code="invalid_stored_contract") from exc


async def upload_contract(conn: Conn, tenant_id: str, source: str, *, actor: str = "admin") -> tuple[dict[str, Any], bool]:
    """Store a contract document as its next revision; return the revision and whether it was new.

    Uploading the text of the revision in force again changes nothing.
    """
    await get_tenant(conn, tenant_id)
    contract = _parse(source)
    if contract.tenant != tenant_id:
        raise Invalid(f"contract {contract.id!r} names tenant {contract.tenant!r}; upload it as that tenant or fix its tenant field", code="contract_tenant_mismatch")
    digest = "sha256:" + hashlib.sha256(source.encode()).hexdigest()
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('valuegate.contract'), hashtext(%s))", (f"{tenant_id}/{contract.id}",))
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute("SELECT revision, sha256 FROM contracts WHERE tenant_id = %s AND id = %s ORDER BY revision DESC LIMIT 1", (tenant_id, contract.id))
    latest = await cur.fetchone()
    if latest is not None and latest["sha256"] == digest:
        return await get_contract(conn, tenant_id, contract.id), False
    revision = 1 if latest is None else latest["revision"] + 1
    document = msgspec.to_builtins(contract)
    await conn.execute(
        "INSERT INTO contracts (tenant_id, id, revision, source, document, sha256, uploaded_by) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (tenant_id, contract.id, revision, source, Jsonb(document), digest, actor),
    )
    await audit(conn, tenant_id=tenant_id, actor=actor, action="contract.upload", object_type="contract", object_id=contract.id, detail={"revision": revision, "sha256": digest})
    return await get_contract(conn, tenant_id, contract.id), True


_COLUMNS = "id, revision, document, sha256, uploaded_at, uploaded_by"


def _with_digest(row: dict[str, Any]) -> dict[str, Any]:
    # The stored document is the parsed contract with its defaults, so its canonical digest is
    # contract_digest() of that contract: the digest to print on the signed contract.
    return {**row, "contract_digest": content_digest(row["document"])}


async def list_contracts(conn: Conn, tenant_id: str) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(f"SELECT DISTINCT ON (id) {_COLUMNS} FROM contracts WHERE tenant_id = %s ORDER BY id, revision DESC", (tenant_id,))
    return [_with_digest(row) for row in await cur.fetchall()]


async def get_contract(conn: Conn, tenant_id: str, contract_id: str) -> dict[str, Any]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(f"SELECT {_COLUMNS} FROM contracts WHERE tenant_id = %s AND id = %s ORDER BY revision DESC LIMIT 1", (tenant_id, contract_id))
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"contract {contract_id!r} not found")
    return _with_digest(row)


async def current_contract(conn: Conn, tenant_id: str, contract_id: str) -> tuple[Contract, int]:
    """Return the parsed contract in force and its revision."""
    row = await get_contract(conn, tenant_id, contract_id)
    return parse_stored(row["document"], contract_id, row["revision"]), row["revision"]
