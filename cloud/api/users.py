"""User, API token and session endpoints."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import Cookie, State
from litestar.exceptions import NotAuthorizedException, TooManyRequestsException
from litestar.params import FromPath, JSONBody

from .. import auth
from ..auth import requires
from .deps import Conn, caller
from .schemas import LoginIn, TokenIn, UserIn

__all__ = ("UserController", "SessionController")


class UserController(Controller):
    """Users and API tokens of the caller's tenant; managing them needs ``admin``."""

    path = ""
    tags = ["users"]
    guards = [requires("admin")]

    @get("/users", summary="List users")
    async def users(self, request: Request[Any, Any, Any], conn: Conn) -> list[dict[str, Any]]:
        return await auth.list_users(conn, caller(request).tenant_id)

    @post("/users", summary="Create a user")
    async def create_user(self, request: Request[Any, Any, Any], conn: Conn, data: JSONBody[UserIn]) -> dict[str, Any]:
        principal = caller(request)
        return await auth.create_user(conn, principal.tenant_id, data.username, data.password, list(data.roles), display_name=data.display_name, actor=principal.actor)

    @get("/users/{user_id:int}", summary="One user")
    async def user(self, request: Request[Any, Any, Any], conn: Conn, user_id: FromPath[int]) -> dict[str, Any]:
        return await auth.get_user(conn, caller(request).tenant_id, user_id)

    @delete("/users/{user_id:int}", status_code=200, summary="Disable a user and end their sessions and tokens (the user is not deleted)")
    async def disable_user(self, request: Request[Any, Any, Any], conn: Conn, user_id: FromPath[int]) -> dict[str, Any]:
        principal = caller(request)
        return await auth.disable_user(conn, principal.tenant_id, user_id, actor=principal.actor, caller_id=principal.user_id)

    @post("/users/{user_id:int}/enable", status_code=200, summary="Enable a disabled user; their old tokens stay revoked")
    async def enable_user(self, request: Request[Any, Any, Any], conn: Conn, user_id: FromPath[int]) -> dict[str, Any]:
        principal = caller(request)
        return await auth.enable_user(conn, principal.tenant_id, user_id, actor=principal.actor)

    @get("/tokens", summary="List API tokens (never their secrets)")
    async def tokens(self, request: Request[Any, Any, Any], conn: Conn) -> list[dict[str, Any]]:
        return await auth.list_tokens(conn, caller(request).tenant_id)

    @post("/tokens", summary="Issue an API token; the response shows it once")
    async def issue_token(self, request: Request[Any, Any, Any], conn: Conn, data: JSONBody[TokenIn]) -> dict[str, Any]:
        principal = caller(request)
        row, token = await auth.issue_token(conn, principal.tenant_id, data.user_id or principal.user_id, data.name, expires_at=data.expires_at, actor=principal.actor)
        return {**row, "token": token}

    @delete("/tokens/{token_id:str}", status_code=200, summary="Revoke an API token")
    async def revoke_token(self, request: Request[Any, Any, Any], conn: Conn, token_id: FromPath[str]) -> dict[str, Any]:
        principal = caller(request)
        return await auth.revoke_token(conn, principal.tenant_id, token_id, actor=principal.actor)


class SessionController(Controller):
    """Web sessions: log in with a password, read the session's CSRF token, log out."""

    path = "/session"
    tags = ["session"]

    @post("", summary="Log in; sets the session cookie and returns the CSRF token")
    async def login(self, request: Request[Any, Any, Any], conn: Conn, data: JSONBody[LoginIn], state: State) -> Response[dict[str, Any]]:
        settings = state.settings
        client = request.client.host if request.client else ""
        try:
            session_id, principal = await auth.login(conn, data.username, data.password, max_age_s=settings.session_max_age_s, client=client)
        except auth.LoginFailed:
            raise NotAuthorizedException("user name or password is wrong, or the user is disabled") from None
        except auth.LoginThrottled as exc:
            detail = f"too many failed log-ins for this user name from this address; try again in {exc.retry_after_s} s"
            raise TooManyRequestsException(detail, headers={"Retry-After": str(exc.retry_after_s)}) from None
        cookie = Cookie(
            key=auth.SESSION_COOKIE, value=session_id, path="/", httponly=True, secure=settings.cookie_secure,
            samesite="lax", max_age=settings.session_max_age_s,
        )  # fmt: skip
        body = {"username": principal.username, "tenant": principal.tenant_id, "roles": sorted(principal.roles), "csrf_token": principal.csrf_token}
        return Response(body, status_code=201, cookies=[cookie])

    @get("", guards=[requires()], summary="The caller and, for a session, its CSRF token")
    async def whoami(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        principal = caller(request)
        return {"username": principal.username, "tenant": principal.tenant_id, "roles": sorted(principal.roles), "via": principal.via, "csrf_token": principal.csrf_token}

    @delete("", guards=[requires()], status_code=200, summary="Log out")
    async def logout(self, request: Request[Any, Any, Any], conn: Conn) -> Response[dict[str, Any]]:
        session_id = request.cookies.get(auth.SESSION_COOKIE)
        if session_id:
            await auth.logout(conn, session_id)
        return Response({"logged_out": True}, cookies=[Cookie(key=auth.SESSION_COOKIE, value="", path="/", max_age=0, httponly=True)])
