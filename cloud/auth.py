"""Users, roles, API tokens, web sessions with CSRF tokens, and the Litestar middleware and guards that use them.

Passwords are hashed with argon2id. API tokens (``vgt_<id>_<secret>``) and
session ids are random 256-bit values stored only as SHA-256 digests, which
is enough for secrets of that entropy. A request carries either
``Authorization: Bearer <token>`` (machines) or the session cookie (the web
UI). A session request that changes state must also carry the session's
CSRF token in the ``X-CSRF-Token`` header or the ``_csrf_token`` form field.
Failed log-ins are counted per user name and client address in PostgreSQL,
shared by every server process, and rejected for a while once there are too
many (:class:`LoginThrottle`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

import psycopg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers import BaseRouteHandler
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send
from psycopg.rows import dict_row

from .store import Conflict, Invalid, NotFound, audit, get_tenant, utcnow
from .throttle import LoginThrottle, LoginThrottled, forget_user, login_throttle

__all__ = (
    "ROLES",
    "SESSION_COOKIE",
    "CSRF_HEADER",
    "CSRF_FORM_FIELD",
    "Principal",
    "hash_password",
    "create_user",
    "list_users",
    "get_user",
    "disable_user",
    "enable_user",
    "issue_token",
    "list_tokens",
    "revoke_token",
    "LoginFailed",
    "UserDisabled",
    "LoginThrottled",
    "LoginThrottle",
    "login_throttle",
    "login",
    "logout",
    "authenticate",
    "AuthMiddleware",
    "CsrfRejected",
    "requires",
)

Conn = psycopg.AsyncConnection[Any]
ROLES = ("admin", "csm", "finance", "auditor")
SESSION_COOKIE = "vg_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FORM_FIELD = "_csrf_token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_hasher = PasswordHasher()
# Verified against when the user does not exist, so that a login takes as long either way.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))
# An API token's last_used_at is written only when the stored time is older than this many seconds, not on every request.
TOKEN_USE_INTERVAL_S = 60


class LoginFailed(Exception):
    """User name or password is wrong, or the user is disabled; the message does not tell which."""


class UserDisabled(LoginFailed):
    """The password was right but the user is disabled. Callers return the same response as for any other :class:`LoginFailed`."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request: user, tenant, roles, and how they authenticated."""

    user_id: int
    username: str
    tenant_id: str
    roles: frozenset[str]
    via: str
    csrf_token: str | None = None

    @property
    def actor(self) -> str:
        return f"user:{self.username}"

    def has(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def hash_password(password: str) -> str:
    if len(password) < 10:
        raise Invalid("password is shorter than 10 characters; choose a longer one", code="weak_password")
    return _hasher.hash(password)


def _check_roles(roles: list[str]) -> list[str]:
    unknown = [r for r in roles if r not in ROLES]
    if not roles or unknown:
        raise Invalid(f"roles {roles!r} are invalid; choose one or more of {', '.join(ROLES)}", code="invalid_roles")
    return sorted(set(roles))


# Control characters other than the tab, which a one-line name may not contain.
_CONTROL_CHARACTER = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_USER_COLUMNS = "id, tenant_id, username, display_name, roles, disabled, created_at"


async def create_user(
    conn: Conn, tenant_id: str, username: str, password: str | None, roles: list[str], *, display_name: str = "", actor: str = "admin"
) -> dict[str, Any]:
    """Create a user of one tenant; a user without a password can only use API tokens."""
    await get_tenant(conn, tenant_id)
    roles = _check_roles(roles)
    if not username or len(username) > 128 or username != username.strip():
        raise Invalid(f"username {username!r} must be 1-128 characters without surrounding spaces", code="invalid_username")
    # The same rule as the API's display_name field, for callers such as `cloud admin user-create` that bypass it.
    if len(display_name) > 200 or _CONTROL_CHARACTER.search(display_name):
        raise Invalid(f"display name {display_name!r} must be one line of at most 200 characters", code="invalid_display_name")
    # argon2 takes about a tenth of a second of CPU: off the event loop, so other requests go on meanwhile.
    digest = await asyncio.to_thread(hash_password, password) if password is not None else None
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"INSERT INTO users (tenant_id, username, display_name, password_hash, roles) VALUES (%s, %s, %s, %s, %s)"
        f" ON CONFLICT (username) DO NOTHING RETURNING {_USER_COLUMNS}",
        (tenant_id, username, display_name, digest, roles),
    )
    row = await cur.fetchone()
    if row is None:
        raise Conflict(f"username {username!r} is taken; choose another", code="username_exists")
    await audit(conn, tenant_id=tenant_id, actor=actor, action="user.create", object_type="user", object_id=str(row["id"]), detail={"username": username, "roles": roles})
    return row


async def list_users(conn: Conn, tenant_id: str) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE tenant_id = %s ORDER BY id", (tenant_id,))
    return await cur.fetchall()


async def get_user(conn: Conn, tenant_id: str, user_id: int) -> dict[str, Any]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE tenant_id = %s AND id = %s", (tenant_id, user_id))
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"user {user_id} not found")
    return row


async def disable_user(conn: Conn, tenant_id: str, user_id: int, *, actor: str = "admin", caller_id: int | None = None) -> dict[str, Any]:
    """Disable a user and end their sessions and tokens; the row stays for the audit trail, and so does the taken user name.

    ``caller_id`` is the user making the request, who may not disable themselves.
    Disabling the tenant's last enabled admin raises :class:`Conflict` too, because
    no one could then manage the tenant's users.
    """
    user = await get_user(conn, tenant_id, user_id)
    if user_id == caller_id:
        raise Conflict(f"you cannot disable your own user {user_id} ({user['username']}); another admin of the tenant must do it", code="cannot_disable_self")
    # Locks the tenant's enabled admins, so that two admins disabling each other at once cannot both succeed.
    cur = await conn.execute("SELECT id FROM users WHERE tenant_id = %s AND NOT disabled AND 'admin' = ANY(roles) ORDER BY id FOR UPDATE", (tenant_id,))
    if [row[0] for row in await cur.fetchall()] == [user_id]:
        msg = f"user {user_id} ({user['username']}) is the last enabled admin of tenant {tenant_id!r}; create or enable another admin first"
        raise Conflict(msg, code="last_admin")
    if user["disabled"]:
        return user  # nothing changes, so no audit record either
    # The row lock makes a log-in or token issue that is under way wait, and then see the user disabled.
    await conn.execute("UPDATE users SET disabled = true WHERE id = %s", (user_id,))
    await conn.execute("DELETE FROM sessions WHERE user_id = %s", (user_id,))
    await conn.execute("UPDATE api_tokens SET revoked_at = now() WHERE user_id = %s AND revoked_at IS NULL", (user_id,))
    await audit(conn, tenant_id=tenant_id, actor=actor, action="user.disable", object_type="user", object_id=str(user_id))
    return await get_user(conn, tenant_id, user_id)


async def enable_user(conn: Conn, tenant_id: str, user_id: int, *, actor: str = "admin") -> dict[str, Any]:
    """Enable a user and clear their failed log-in counts, so that a user locked out by the throttle can log in at once.

    Tokens and sessions that a disabling ended stay ended: the user logs in again or gets new tokens.
    The returned row adds ``already_enabled`` (the user was not disabled) and ``login_failures_cleared``
    (how many client addresses had failures for this user name). The counts are in the database, so the
    clearing holds for every `cloud serve` process once the transaction commits.
    """
    user = await get_user(conn, tenant_id, user_id)
    already_enabled = not user["disabled"]
    if not already_enabled:
        await conn.execute("UPDATE users SET disabled = false WHERE id = %s", (user_id,))
        await audit(conn, tenant_id=tenant_id, actor=actor, action="user.enable", object_type="user", object_id=str(user_id))
    cleared = await forget_user(conn, user["username"])
    if already_enabled and cleared:
        detail = {"login_failures_cleared": cleared}
        await audit(conn, tenant_id=tenant_id, actor=actor, action="user.unlock", object_type="user", object_id=str(user_id), detail=detail)
    row = await get_user(conn, tenant_id, user_id)
    return {**row, "already_enabled": already_enabled, "login_failures_cleared": cleared}


_TOKEN_COLUMNS = "id, user_id, name, created_at, expires_at, revoked_at, last_used_at"


async def issue_token(
    conn: Conn, tenant_id: str, user_id: int, name: str = "", *, expires_at: dt.datetime | None = None, actor: str = "admin"
) -> tuple[dict[str, Any], str]:
    """Create an API token for a user; return its row and the token text, which is not stored and cannot be shown again."""
    user = await get_user(conn, tenant_id, user_id)
    # A share lock on the user's row: a disable running now either finishes first (and is seen here) or waits for this token and revokes it.
    cur = await conn.execute("SELECT disabled FROM users WHERE id = %s FOR SHARE", (user_id,))
    user["disabled"] = (await cur.fetchone())[0]  # type: ignore[index]
    if user["disabled"]:
        action = f"POST /api/v1/users/{user_id}/enable or `valuegate cloud admin user-enable {tenant_id} {user['username']}`"
        raise Invalid(f"user {user_id} ({user['username']}) is disabled; enable it first ({action})", code="user_disabled")
    if expires_at is not None and expires_at.tzinfo is None:
        raise Invalid("expires_at has no time zone; give it with an offset such as Z", code="naive_timestamp")
    if expires_at is not None and expires_at <= dt.datetime.now(dt.UTC):
        raise Invalid(f"expires_at {expires_at.isoformat()} is not in the future, so the token could never be used; give a later time", code="expires_in_past")
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"INSERT INTO api_tokens (id, tenant_id, user_id, name, secret_sha256, expires_at) VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_TOKEN_COLUMNS}",
        (token_id, tenant_id, user_id, name, _sha256(secret), expires_at),
    )
    row = await cur.fetchone()
    await audit(conn, tenant_id=tenant_id, actor=actor, action="token.issue", object_type="api_token", object_id=token_id, detail={"user_id": user_id, "name": name})
    return row, f"vgt_{token_id}_{secret}"  # type: ignore[return-value]


async def list_tokens(conn: Conn, tenant_id: str) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(f"SELECT {_TOKEN_COLUMNS} FROM api_tokens WHERE tenant_id = %s ORDER BY created_at, id", (tenant_id,))
    return await cur.fetchall()


async def revoke_token(conn: Conn, tenant_id: str, token_id: str, *, actor: str = "admin") -> dict[str, Any]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"UPDATE api_tokens SET revoked_at = now() WHERE tenant_id = %s AND id = %s AND revoked_at IS NULL RETURNING {_TOKEN_COLUMNS}", (tenant_id, token_id)
    )
    row = await cur.fetchone()
    if row is None:
        # Revoked before (the audit log contains that revocation), or unknown.
        await cur.execute(f"SELECT {_TOKEN_COLUMNS} FROM api_tokens WHERE tenant_id = %s AND id = %s", (tenant_id, token_id))
        if (row := await cur.fetchone()) is None:
            raise NotFound(f"API token {token_id!r} not found")
        return row
    await audit(conn, tenant_id=tenant_id, actor=actor, action="token.revoke", object_type="api_token", object_id=token_id)
    return row


async def login(
    conn: Conn, username: str, password: str, *, max_age_s: int, client: str = "", throttle: LoginThrottle | None = None
) -> tuple[str, Principal]:
    """Check a password and open a session; return the session id for the cookie and the principal.

    ``client`` is the caller's address. Failures count per user name and address with ``throttle``
    (:data:`login_throttle` by default), which raises :class:`LoginThrottled` after too many.
    ``conn`` must be outside a transaction: the throttle commits its statements at once. On success
    the session is inserted in a transaction that the caller commits.
    """
    throttle = throttle if throttle is not None else login_throttle
    # Long user names are cut for the count only: real ones have at most 128 characters.
    attempt = await throttle.attempt(conn, username[:256], client)
    try:
        session_id, principal = await _open_session(conn, username, password, max_age_s=max_age_s)
    except UserDisabled:
        # Not counted, so that the user can log in as soon as an admin enables them. The rollback ends the share lock
        # on the user's row and lets the throttle commit on its own.
        # NOTE: a caller can therefore tell a disabled user's right password from a wrong one by when the 429 starts.
        await conn.rollback()
        await throttle.withdraw(conn, attempt)
        raise
    except LoginFailed:
        throttle.failed(attempt)
        raise
    # Any other error leaves the attempt counted as a failure.
    await throttle.succeeded(conn, attempt)
    return session_id, principal


async def _open_session(conn: Conn, username: str, password: str, *, max_age_s: int) -> tuple[str, Principal]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute("SELECT id, tenant_id, username, roles, password_hash, disabled FROM users WHERE username = %s", (username,))
    user = await cur.fetchone()
    try:
        # Off the event loop: argon2 takes about a tenth of a second, and every other request would wait for it.
        await asyncio.to_thread(_hasher.verify, user["password_hash"] if user and user["password_hash"] else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        raise LoginFailed from None
    if user is None or user["password_hash"] is None:
        raise LoginFailed
    # Read again under a share lock: a disable (or password change) that committed during the check is seen, and one
    # that starts now waits for this session and then ends it.
    await cur.execute("SELECT disabled, password_hash FROM users WHERE id = %s FOR SHARE", (user["id"],))
    current = await cur.fetchone()
    if current is None or current["password_hash"] != user["password_hash"]:
        raise LoginFailed
    if current["disabled"]:
        raise UserDisabled
    session_id = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO sessions (id_sha256, user_id, tenant_id, csrf_token, expires_at) VALUES (%s, %s, %s, %s, %s)",
        (_sha256(session_id), user["id"], user["tenant_id"], csrf, utcnow() + dt.timedelta(seconds=max_age_s)),
    )
    await conn.execute("DELETE FROM sessions WHERE expires_at < now()")
    return session_id, Principal(user["id"], user["username"], user["tenant_id"], frozenset(user["roles"]), "session", csrf)


async def logout(conn: Conn, session_id: str) -> None:
    await conn.execute("DELETE FROM sessions WHERE id_sha256 = %s", (_sha256(session_id),))


async def authenticate(conn: Conn, *, bearer: str | None, session_id: str | None) -> Principal | None:
    """Return the principal of an API token or a session id, or None when neither is valid."""
    cur = conn.cursor(row_factory=dict_row)
    if bearer is not None:
        parts = bearer.split("_", 2)
        if len(parts) != 3 or parts[0] != "vgt":
            return None
        await cur.execute(
            "SELECT t.secret_sha256, u.id, u.username, u.tenant_id, u.roles,"
            " t.last_used_at IS NULL OR t.last_used_at < now() - make_interval(secs => %s) AS use_due"
            " FROM api_tokens t JOIN users u ON u.id = t.user_id"
            " WHERE t.id = %s AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now()) AND NOT u.disabled",
            (TOKEN_USE_INTERVAL_S, parts[1]),
        )
        row = await cur.fetchone()
        if row is None or not hmac.compare_digest(row["secret_sha256"], _sha256(parts[2])):
            return None
        if row["use_due"]:
            await cur.execute("UPDATE api_tokens SET last_used_at = now() WHERE id = %s", (parts[1],))
        return Principal(row["id"], row["username"], row["tenant_id"], frozenset(row["roles"]), "token")
    if session_id:
        await cur.execute(
            "SELECT s.csrf_token, u.id, u.username, u.tenant_id, u.roles FROM sessions s JOIN users u ON u.id = s.user_id"
            " WHERE s.id_sha256 = %s AND s.expires_at > now() AND NOT u.disabled",
            (_sha256(session_id),),
        )
        row = await cur.fetchone()
        if row is not None:
            return Principal(row["id"], row["username"], row["tenant_id"], frozenset(row["roles"]), "session", row["csrf_token"])
    return None


class AuthMiddleware(ASGIMiddleware):
    """Attach the caller's :class:`Principal` (or None) as ``request.user`` and enforce CSRF on session writes.

    It never rejects an anonymous request by itself: guards made by :func:`requires` do.
    """

    scopes = ("http",)  # type: ignore[assignment]

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        authorization = headers.get("authorization", "")
        bearer = authorization[7:].strip() if authorization[:7].lower() == "bearer " else None
        session_id = _cookie(headers.get("cookie", ""), SESSION_COOKIE)
        principal = None
        if bearer is not None or session_id:
            pool = scope["litestar_app"].state.pool
            async with pool.connection() as conn:
                principal = await authenticate(conn, bearer=bearer, session_id=session_id)
        if bearer is not None and principal is None:
            raise NotAuthorizedException("API token is invalid, expired or revoked; issue a new one")
        scope["user"] = principal
        scope["auth"] = principal.via if principal else None
        if principal is not None and principal.via == "session" and scope["method"] not in _SAFE_METHODS:
            await _check_csrf(scope, receive, headers, principal)
        await next_app(scope, receive, send)


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value or None
    return None


class CsrfRejected(PermissionDeniedException):
    """A session's write request without its CSRF token or with another one (a stale form, or a forged request)."""


async def _check_csrf(scope: Scope, receive: Receive, headers: dict[str, str], principal: Principal) -> None:
    supplied = headers.get(CSRF_HEADER)
    content_type = headers.get("content-type", "")
    if supplied is None and content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        request = scope["litestar_app"].request_class(scope=scope, receive=receive)
        form = await request.form()
        value = form.get(CSRF_FORM_FIELD)
        supplied = value if isinstance(value, str) else None
    if supplied is None or principal.csrf_token is None or not hmac.compare_digest(supplied, principal.csrf_token):
        raise CsrfRejected("CSRF token missing or wrong; send the session's token in the X-CSRF-Token header or the _csrf_token form field")


def requires(*roles: str) -> Any:
    """Return a guard that admits an authenticated caller holding any of ``roles`` (any role when none are named)."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
        principal = connection.scope.get("user")
        if principal is None:
            raise NotAuthorizedException("authentication required: send an API token as 'Authorization: Bearer ...' or log in")
        if roles and not principal.has(*roles):
            raise PermissionDeniedException(f"this needs one of the roles {', '.join(roles)}; you have {', '.join(sorted(principal.roles))}")

    return guard
