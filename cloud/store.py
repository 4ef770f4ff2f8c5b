"""Registry repository: tenants, sites, gateways and their signing keys, and the audit log.

Every function takes an open async connection and runs inside the caller's
transaction, so that a change and its audit record commit together. Lookups
by a tenant-scoped id raise :class:`NotFound` for another tenant's object
exactly as for a missing one.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from valuegate.edge.protocol.keys import KeyFormatError, public_key_from_multibase

from .key_use import KeyUse, key_use

__all__ = (
    "StoreError",
    "NotFound",
    "Conflict",
    "Invalid",
    "audit",
    "create_tenant",
    "get_tenant",
    "create_site",
    "list_sites",
    "get_site",
    "create_gateway",
    "list_gateways",
    "get_gateway",
    "add_gateway_key",
    "list_gateway_keys",
    "revoke_gateway_key",
    "move_key_valid_from",
    "register_rotation",
    "utcnow",
)

Conn = psycopg.AsyncConnection[Any]
_TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_OBJECT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class StoreError(ValueError):
    """A repository operation failed for a reason the caller can fix; ``code`` is stable for API problem details."""

    status = 400
    code = "invalid"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class NotFound(StoreError):
    status = 404
    code = "not_found"


class Conflict(StoreError):
    status = 409
    code = "conflict"


class Invalid(StoreError):
    status = 422
    code = "invalid"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _check_id(kind: str, value: str, pattern: re.Pattern[str]) -> None:
    if not isinstance(value, str) or not pattern.match(value):
        msg = f"{kind} id {value!r} is invalid; use 1-63 letters, digits, '_', '-' or '.', starting with a letter or digit"
        if pattern is _TENANT_ID:
            msg = f"tenant id {value!r} is invalid; use 1-63 lower-case letters, digits, '_' or '-', starting with a letter or digit"
        raise Invalid(msg, code=f"invalid_{kind}_id")


def _aware(value: dt.datetime | None, name: str) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        raise Invalid(f"{name} {value.isoformat()} has no time zone; give it with an offset such as +08:00 or Z", code="naive_timestamp")
    return value


async def audit(
    conn: Conn,
    *,
    tenant_id: str | None,
    actor: str,
    action: str,
    object_type: str,
    object_id: str,
    detail: dict[str, Any] | None = None,
) -> int:
    """Append one audit record in the caller's transaction and return its id.

    Called on every key registration or revocation, contract upload, user and
    token change, settlement and adjustment; ``detail`` must hold no secret.
    """
    cur = await conn.execute(
        "INSERT INTO audit_log (tenant_id, actor, action, object_type, object_id, detail) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (tenant_id, actor, action, object_type, object_id, Jsonb(msgspec.to_builtins(detail or {}))),
    )
    row = await cur.fetchone()
    return int(row[0])  # type: ignore[index]


async def _one(conn: Conn, sql: str, params: tuple[Any, ...], missing: str) -> dict[str, Any]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(sql, params)
    row = await cur.fetchone()
    if row is None:
        raise NotFound(missing)
    return row


async def _all(conn: Conn, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(sql, params)
    return await cur.fetchall()


async def create_tenant(conn: Conn, tenant_id: str, name: str, *, actor: str = "admin") -> dict[str, Any]:
    _check_id("tenant", tenant_id, _TENANT_ID)
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute("INSERT INTO tenants (id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING id, name, created_at", (tenant_id, name))
    row = await cur.fetchone()
    if row is None:
        raise Conflict(f"tenant {tenant_id!r} already exists; choose another id", code="tenant_exists")
    await audit(conn, tenant_id=tenant_id, actor=actor, action="tenant.create", object_type="tenant", object_id=tenant_id, detail={"name": name})
    return row


async def get_tenant(conn: Conn, tenant_id: str) -> dict[str, Any]:
    return await _one(conn, "SELECT id, name, created_at FROM tenants WHERE id = %s", (tenant_id,), f"tenant {tenant_id!r} not found")


async def create_site(conn: Conn, tenant_id: str, site_id: str, name: str, time_zone: str, *, actor: str = "admin") -> dict[str, Any]:
    _check_id("site", site_id, _OBJECT_ID)
    try:
        ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise Invalid(f"time zone {time_zone!r} is not an IANA zone name such as 'Asia/Shanghai'", code="invalid_time_zone") from exc
    await get_tenant(conn, tenant_id)
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "INSERT INTO sites (tenant_id, id, name, time_zone) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING id, name, time_zone, created_at",
        (tenant_id, site_id, name, time_zone),
    )
    row = await cur.fetchone()
    if row is None:
        raise Conflict(f"site {site_id!r} already exists in this tenant; choose another id", code="site_exists")
    await audit(conn, tenant_id=tenant_id, actor=actor, action="site.create", object_type="site", object_id=site_id, detail={"time_zone": time_zone})
    return row


async def list_sites(conn: Conn, tenant_id: str) -> list[dict[str, Any]]:
    return await _all(conn, "SELECT id, name, time_zone, created_at FROM sites WHERE tenant_id = %s ORDER BY id", (tenant_id,))


async def get_site(conn: Conn, tenant_id: str, site_id: str) -> dict[str, Any]:
    sql = "SELECT id, name, time_zone, created_at FROM sites WHERE tenant_id = %s AND id = %s"
    return await _one(conn, sql, (tenant_id, site_id), f"site {site_id!r} not found")


_GATEWAY_COLUMNS = """g.id, g.site_id, g.name, g.created_at,
    coalesce(c.contiguous_through, 0) AS stored_through, coalesce(c.highest_seq, 0) AS highest_seq"""


async def create_gateway(conn: Conn, tenant_id: str, site_id: str, gateway_id: str, name: str = "", *, actor: str = "admin") -> dict[str, Any]:
    _check_id("gateway", gateway_id, _OBJECT_ID)
    await get_site(conn, tenant_id, site_id)
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "INSERT INTO gateways (id, tenant_id, site_id, name) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING id",
        (gateway_id, tenant_id, site_id, name),
    )
    if await cur.fetchone() is None:
        # Gateway ids are global, so the message must not reveal whether another tenant uses the id.
        raise Conflict(f"gateway id {gateway_id!r} is taken; choose another id", code="gateway_exists")
    await audit(conn, tenant_id=tenant_id, actor=actor, action="gateway.create", object_type="gateway", object_id=gateway_id, detail={"site": site_id})
    return await get_gateway(conn, tenant_id, gateway_id)


async def list_gateways(conn: Conn, tenant_id: str) -> list[dict[str, Any]]:
    sql = f"SELECT {_GATEWAY_COLUMNS} FROM gateways g LEFT JOIN gateway_chain c ON c.gateway_id = g.id WHERE g.tenant_id = %s ORDER BY g.id"
    return await _all(conn, sql, (tenant_id,))


async def get_gateway(conn: Conn, tenant_id: str, gateway_id: str) -> dict[str, Any]:
    sql = f"SELECT {_GATEWAY_COLUMNS} FROM gateways g LEFT JOIN gateway_chain c ON c.gateway_id = g.id WHERE g.tenant_id = %s AND g.id = %s"
    return await _one(conn, sql, (tenant_id, gateway_id), f"gateway {gateway_id!r} not found")


_KEY_COLUMNS = "id, gateway_id, public_key, valid_from, valid_until, revoked_at, revoked_reason, from_seq, until_seq, created_at"


async def add_gateway_key(
    conn: Conn,
    tenant_id: str,
    gateway_id: str,
    public_key: str,
    *,
    valid_from: dt.datetime | None = None,
    valid_until: dt.datetime | None = None,
    actor: str = "admin",
) -> dict[str, Any]:
    """Register a gateway's Ed25519 public key (multibase ``z6Mk...`` or ``did:key:z6Mk...``) for a validity window."""
    await get_gateway(conn, tenant_id, gateway_id)
    multibase = public_key.removeprefix("did:key:").partition("#")[0]
    try:
        public_key_from_multibase(multibase)
    except KeyFormatError as exc:
        # The format error names the value already.
        raise Invalid(f"{exc}; give the z6Mk... key or the did:key that `valuegate keys export-public` prints", code="invalid_public_key") from exc
    except ValueError as exc:
        raise Invalid(f"public key {public_key!r} is not an Ed25519 multibase key: {exc}", code="invalid_public_key") from exc
    valid_from = _aware(valid_from, "valid_from") or utcnow()
    valid_until = _aware(valid_until, "valid_until")
    if valid_until is not None and valid_until <= valid_from:
        raise Invalid(f"valid_until {valid_until.isoformat()} must be after valid_from {valid_from.isoformat()}", code="invalid_validity")
    cur = conn.cursor(row_factory=dict_row)
    # One key per gateway: a box cloned from another gateway's disk image exports that gateway's key under its own id,
    # and registering it would let one private key sign for both gateways.
    await cur.execute("SELECT gateway_id, tenant_id FROM gateway_keys WHERE public_key = %s AND gateway_id <> %s LIMIT 1", (multibase, gateway_id))
    if (holder := await cur.fetchone()) is not None:
        # Gateway ids are global; name the holder only within the caller's tenant.
        other = f"gateway {holder['gateway_id']!r}" if holder["tenant_id"] == tenant_id else "another gateway"
        msg = (f"key {multibase} is already registered for {other}; each gateway needs a key of its own, so run "
               f"`valuegate keys new -c edge.yaml` on gateway {gateway_id!r} (a box cloned from another gateway's disk image carries that gateway's key)")  # fmt: skip
        raise Conflict(msg, code="key_of_another_gateway")
    await cur.execute(
        f"INSERT INTO gateway_keys (gateway_id, tenant_id, public_key, valid_from, valid_until) VALUES (%s, %s, %s, %s, %s) "
        f"ON CONFLICT DO NOTHING RETURNING {_KEY_COLUMNS}",
        (gateway_id, tenant_id, multibase, valid_from, valid_until),
    )
    row = await cur.fetchone()
    if row is None:
        await cur.execute("SELECT id FROM gateway_keys WHERE gateway_id = %s AND public_key = %s", (gateway_id, multibase))
        existing = await cur.fetchone()
        key_id = existing["id"] if existing else "KEY_ID"
        msg = (f"key {multibase} is already registered for gateway {gateway_id!r} as key {key_id}; move its start earlier with "
               f"`valuegate cloud admin key-valid-from -c cloud.yaml {tenant_id} {gateway_id} {key_id} INSTANT` or POST .../keys/{key_id}/valid-from")  # fmt: skip
        raise Conflict(msg, code="key_exists")
    detail = {"public_key": multibase, "valid_from": valid_from.isoformat(), "valid_until": valid_until.isoformat() if valid_until else None}
    await audit(conn, tenant_id=tenant_id, actor=actor, action="key.register", object_type="gateway_key", object_id=str(row["id"]), detail=detail)
    return row


async def list_gateway_keys(conn: Conn, tenant_id: str, gateway_id: str) -> list[dict[str, Any]]:
    await get_gateway(conn, tenant_id, gateway_id)
    return await _all(conn, f"SELECT {_KEY_COLUMNS} FROM gateway_keys WHERE tenant_id = %s AND gateway_id = %s ORDER BY id", (tenant_id, gateway_id))


async def revoke_gateway_key(
    conn: Conn, tenant_id: str, gateway_id: str, key_id: int, reason: str, *, force: bool = False, actor: str = "admin"
) -> dict[str, Any]:
    """Revoke a key from now on: vouchers signed with it are rejected from then on, also ones issued earlier.

    Returns the key's row with ``already_revoked``: True when it was revoked before, and nothing changed.

    Unless ``force``, refuse (Conflict) while the gateway may still sign with
    the key or while vouchers it signed are not stored, since those would
    then stay missing for good. ``force`` is for a key that may have been copied.
    """
    if not reason.strip():
        raise Invalid("revoking a key needs a reason for the audit log, for example 'gateway replaced' or 'key may have been copied'", code="missing_reason")
    sql = f"SELECT {_KEY_COLUMNS} FROM gateway_keys WHERE tenant_id = %s AND gateway_id = %s AND id = %s FOR UPDATE"
    row = await _one(conn, sql, (tenant_id, gateway_id, key_id), f"key {key_id} of gateway {gateway_id!r} not found")
    if row["revoked_at"] is not None:
        return {**row, "already_revoked": True}
    use = await key_use(conn, gateway_id, row)
    if not force:
        _check_revocation(gateway_id, key_id, use)
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(f"UPDATE gateway_keys SET revoked_at = now(), revoked_reason = %s WHERE id = %s RETURNING {_KEY_COLUMNS}", (reason.strip(), key_id))
    row = await cur.fetchone()
    detail: dict[str, Any] = {"reason": reason.strip(), "forced": force, "last_seq": use.last_seq, "unstored": use.missing}
    await audit(conn, tenant_id=tenant_id, actor=actor, action="key.revoke", object_type="gateway_key", object_id=str(key_id), detail=detail)
    return {**row, "already_revoked": False}  # type: ignore[dict-item]


_FORCE_HINT = "or revoke at once with --force (API: \"force\": true) if the key may have been copied"


def _check_revocation(gateway_id: str, key_id: int, use: KeyUse) -> None:
    if use.last_seq is None:
        latest = f"its latest stored voucher (seq {use.latest_seq}) is signed with it" if use.latest_seq else "no voucher of it is stored yet"
        msg = (f"key {key_id} may still sign the vouchers of gateway {gateway_id!r}: {latest}. Give the gateway its next key first "
               "(`valuegate keys rotate`, or `valuegate keys new --replace-lost` and `valuegate cloud admin key-add`), wait until a voucher "
               f"signed with the new key is stored and the gateway's outbox is empty, {_FORCE_HINT}")  # fmt: skip
        raise Conflict(msg, code="key_in_use")
    if use.missing:
        msg = (f"key {key_id} signed the sequences of gateway {gateway_id!r} up to {use.last_seq}, and {use.missing} of them are not stored "
               f"(the first is {use.first_missing}); revoked now, they would be rejected for good. Wait until the gateway's outbox is "
               f"empty and its chain shows no gap, {_FORCE_HINT}")  # fmt: skip
        raise Conflict(msg, code="key_signed_unstored")


async def move_key_valid_from(
    conn: Conn, tenant_id: str, gateway_id: str, key_id: int, valid_from: dt.datetime, *, reason: str = "", actor: str = "admin"
) -> dict[str, Any]:
    """Move the start of a key's validity earlier, so that vouchers the gateway signed before registration verify.

    Only earlier: a later start would reject vouchers already stored, and a key
    is ended by revoking it. A revoked key stays revoked, so it raises Conflict.
    """
    valid_from = _aware(valid_from, "valid_from")  # type: ignore[assignment]
    sql = f"SELECT {_KEY_COLUMNS} FROM gateway_keys WHERE tenant_id = %s AND gateway_id = %s AND id = %s FOR UPDATE"
    row = await _one(conn, sql, (tenant_id, gateway_id, key_id), f"key {key_id} of gateway {gateway_id!r} not found")
    if row["revoked_at"] is not None:
        msg = f"key {key_id} of gateway {gateway_id!r} was revoked at {row['revoked_at'].isoformat()}; register a new key instead of moving its validity"
        raise Conflict(msg, code="key_revoked")
    if valid_from > row["valid_from"]:
        msg = (f"valid_from {valid_from.isoformat()} is later than key {key_id}'s current start {row['valid_from'].isoformat()}; "
               "it can only move earlier, and `valuegate cloud admin key-revoke` ends a key")  # fmt: skip
        raise Invalid(msg, code="invalid_validity")
    if valid_from == row["valid_from"]:
        return row
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(f"UPDATE gateway_keys SET valid_from = %s WHERE id = %s RETURNING {_KEY_COLUMNS}", (valid_from, key_id))
    moved = await cur.fetchone()
    detail = {"previous_valid_from": row["valid_from"].isoformat(), "valid_from": valid_from.isoformat(), "reason": reason}
    await audit(conn, tenant_id=tenant_id, actor=actor, action="key.valid_from", object_type="gateway_key", object_id=str(key_id), detail=detail)
    return moved  # type: ignore[return-value]


async def register_rotation(conn: Conn, tenant_id: str, gateway_id: str, statement: dict[str, Any], *, actor: str = "admin") -> dict[str, Any]:
    """Register the next key of a gateway from a rotation statement signed by its current key.

    The previous key then signs sequences below ``from_seq`` only, and the next
    key signs ``from_seq`` and later; both keep their validity windows.
    """
    from valuegate.edge.protocol.keyrotation import RotationError, parse_rotation, verify_rotation

    gateway = await get_gateway(conn, tenant_id, gateway_id)
    try:
        claims = parse_rotation(statement)
    except RotationError as exc:
        raise Invalid(f"rotation statement is invalid: {exc}", code="invalid_rotation") from exc
    check = verify_rotation(statement)
    if not check.ok:
        raise Invalid(f"rotation statement does not verify: {check.reason}", code="invalid_rotation")
    site = gateway["site_id"]
    if (claims.tenant, claims.site, claims.gateway) != (tenant_id, site, gateway_id):
        msg = f"statement names {claims.tenant}/{claims.site}/{claims.gateway}, not {tenant_id}/{site}/{gateway_id}"
        raise Invalid(msg, code="invalid_rotation")
    previous = claims.previous_key.removeprefix("did:key:").partition("#")[0]
    following = claims.next_key.removeprefix("did:key:").partition("#")[0]
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"SELECT {_KEY_COLUMNS} FROM gateway_keys WHERE gateway_id = %s AND public_key = %s FOR UPDATE", (gateway_id, previous)
    )
    old = await cur.fetchone()
    if old is None or old["revoked_at"] is not None:
        raise Invalid(f"previous key {previous} is not a registered, unrevoked key of gateway {gateway_id!r}", code="invalid_rotation")
    if old["until_seq"] is not None and old["until_seq"] != claims.from_seq - 1:
        raise Conflict(f"key {previous} was already rotated at seq {old['until_seq'] + 1}", code="rotation_exists")
    created = dt.datetime.fromisoformat(claims.created)
    if created.tzinfo is None:
        raise Invalid(f"statement created {claims.created!r} has no time zone", code="naive_timestamp")
    await cur.execute(
        "INSERT INTO key_rotations (gateway_id, tenant_id, from_seq, previous_key, next_key, statement) VALUES (%s, %s, %s, %s, %s, %s)"
        " ON CONFLICT DO NOTHING RETURNING from_seq",
        (gateway_id, tenant_id, claims.from_seq, previous, following, Jsonb(statement)),
    )
    if await cur.fetchone() is None:
        return await _one(conn, f"SELECT {_KEY_COLUMNS} FROM gateway_keys WHERE gateway_id = %s AND public_key = %s", (gateway_id, following), "key not found")
    await conn.execute("UPDATE gateway_keys SET until_seq = %s WHERE id = %s", (claims.from_seq - 1, old["id"]))
    await cur.execute(
        f"INSERT INTO gateway_keys (gateway_id, tenant_id, public_key, valid_from, from_seq) VALUES (%s, %s, %s, %s, %s)"
        f" ON CONFLICT (gateway_id, public_key) DO UPDATE SET from_seq = excluded.from_seq RETURNING {_KEY_COLUMNS}",
        (gateway_id, tenant_id, following, created, claims.from_seq),
    )
    row = await cur.fetchone()
    detail = {"previous_key": previous, "next_key": following, "from_seq": claims.from_seq}
    await audit(conn, tenant_id=tenant_id, actor=actor, action="key.rotate", object_type="gateway_key", object_id=str(row["id"]), detail=detail)  # type: ignore[index]
    return row  # type: ignore[return-value]
