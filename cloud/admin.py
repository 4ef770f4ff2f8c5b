"""Administration from Python: tenants, sites, gateways, keys, contracts, users and tokens, each in its own transaction.

    async with Admin(dsn) as admin:
        await admin.create_tenant("acme", "ACME Bottling")
        await admin.create_site("acme", "plant1", "Shanghai plant", "Asia/Shanghai")
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import psycopg

from . import auth, contracts, machines, store
from .db import UTC_OPTIONS

__all__ = ("Admin",)


class Admin:
    """Registry and user administration over one database connection; every call commits on success."""

    def __init__(self, dsn: str, *, actor: str = "admin") -> None:
        self.dsn = dsn
        self.actor = actor
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def __aenter__(self) -> Admin:
        self._conn = await psycopg.AsyncConnection.connect(self.dsn, options=UTC_OPTIONS)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    @property
    def conn(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None:
            raise RuntimeError("Admin is not open; use it as 'async with Admin(dsn) as admin'")
        return self._conn

    async def create_tenant(self, tenant_id: str, name: str) -> dict[str, Any]:
        async with self.conn.transaction():
            return await store.create_tenant(self.conn, tenant_id, name, actor=self.actor)

    async def create_site(self, tenant_id: str, site_id: str, name: str, time_zone: str) -> dict[str, Any]:
        async with self.conn.transaction():
            return await store.create_site(self.conn, tenant_id, site_id, name, time_zone, actor=self.actor)

    async def create_gateway(self, tenant_id: str, site_id: str, gateway_id: str, name: str = "") -> dict[str, Any]:
        async with self.conn.transaction():
            return await store.create_gateway(self.conn, tenant_id, site_id, gateway_id, name, actor=self.actor)

    async def add_key(
        self, tenant_id: str, gateway_id: str, public_key: str, *, valid_from: dt.datetime | None = None, valid_until: dt.datetime | None = None
    ) -> dict[str, Any]:
        """Register a gateway's public key (multibase or did:key); ``valid_from`` defaults to now, which rejects vouchers signed earlier."""
        async with self.conn.transaction():
            return await store.add_gateway_key(self.conn, tenant_id, gateway_id, public_key, valid_from=valid_from, valid_until=valid_until, actor=self.actor)

    async def revoke_key(self, tenant_id: str, gateway_id: str, key_id: int, reason: str, *, force: bool = False) -> dict[str, Any]:
        """Revoke a key; raise Conflict while it may still sign or its vouchers are not all stored, unless ``force``."""
        async with self.conn.transaction():
            return await store.revoke_gateway_key(self.conn, tenant_id, gateway_id, key_id, reason, force=force, actor=self.actor)

    async def move_key_valid_from(self, tenant_id: str, gateway_id: str, key_id: int, valid_from: dt.datetime, *, reason: str = "") -> dict[str, Any]:
        """Move the start of a key's validity earlier; raise Invalid for a later start and Conflict for a revoked key."""
        async with self.conn.transaction():
            return await store.move_key_valid_from(self.conn, tenant_id, gateway_id, key_id, valid_from, reason=reason, actor=self.actor)

    async def register_rotation(self, tenant_id: str, gateway_id: str, statement: dict[str, Any]) -> dict[str, Any]:
        """Register a gateway's next key from a rotation statement signed by its current key."""
        async with self.conn.transaction():
            return await store.register_rotation(self.conn, tenant_id, gateway_id, statement, actor=self.actor)

    async def move_machine(self, tenant_id: str, machine_id: str, gateway_id: str, *, since: dt.datetime | None = None) -> dict[str, Any]:
        """Make ``gateway_id`` the source of a machine's telemetry from ``since`` (default now) on; return the move."""
        async with self.conn.transaction():
            return await machines.move_machine(self.conn, tenant_id, machine_id, gateway_id, since=since, actor=self.actor)

    async def upload_contract(self, tenant_id: str, source: str | Path) -> tuple[dict[str, Any], bool]:
        """Store a contract from its text or a file path; return the revision in force and whether it is new."""
        text = source.read_text(encoding="utf-8") if isinstance(source, Path) else source
        async with self.conn.transaction():
            return await contracts.upload_contract(self.conn, tenant_id, text, actor=self.actor)

    async def create_user(self, tenant_id: str, username: str, roles: list[str], *, password: str | None = None, display_name: str = "") -> dict[str, Any]:
        async with self.conn.transaction():
            return await auth.create_user(self.conn, tenant_id, username, password, roles, display_name=display_name, actor=self.actor)

    async def _user_id(self, tenant_id: str, username: str) -> int:
        cur = await self.conn.execute("SELECT id FROM users WHERE tenant_id = %s AND username = %s", (tenant_id, username))
        row = await cur.fetchone()
        if row is None:
            raise store.NotFound(f"user {username!r} not found in tenant {tenant_id!r}")
        return int(row[0])

    async def disable_user(self, tenant_id: str, username: str) -> dict[str, Any]:
        """Disable a user and revoke their tokens; raise Conflict for the tenant's last enabled admin."""
        async with self.conn.transaction():
            return await auth.disable_user(self.conn, tenant_id, await self._user_id(tenant_id, username), actor=self.actor)

    async def enable_user(self, tenant_id: str, username: str) -> dict[str, Any]:
        async with self.conn.transaction():
            return await auth.enable_user(self.conn, tenant_id, await self._user_id(tenant_id, username), actor=self.actor)

    async def issue_token(self, tenant_id: str, username: str, name: str = "", *, expires_at: dt.datetime | None = None) -> str:
        """Issue an API token for a user and return the token text (shown only here)."""
        async with self.conn.transaction():
            user_id = await self._user_id(tenant_id, username)
            _row, token = await auth.issue_token(self.conn, tenant_id, user_id, name, expires_at=expires_at, actor=self.actor)
        return token

    async def revoke_token(self, tenant_id: str, token_id: str) -> dict[str, Any]:
        async with self.conn.transaction():
            return await auth.revoke_token(self.conn, tenant_id, token_id, actor=self.actor)
