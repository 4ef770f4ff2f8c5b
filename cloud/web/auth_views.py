"""Log-in and log-out pages of the web UI; sessions and CSRF tokens come from valuegate.cloud.auth."""

from __future__ import annotations

import math
from urllib.parse import urlsplit
from typing import Annotated, Any

import msgspec
import structlog
from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect

from valuegate.cloud import auth
from valuegate.cloud.api.deps import Conn

from .i18n import translate
from .pages import Filled, error_page, language_of, page, principal_of, with_language

__all__ = ("root", "login_page", "login_submit", "logout_submit")

log = structlog.get_logger("valuegate.cloud.web")


def _safe_next(target: str | None) -> str:
    # Only local paths: an absolute or scheme-relative URL would make the login page an open redirect.
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/contracts"
    return target


@get("/", name="web:root")
async def root(request: Request[Any, Any, Any]) -> Redirect:
    return Redirect(with_language(request, "/contracts" if principal_of(request) else "/login"), status_code=303)


@get("/login", name="web:login")
async def login_page(request: Request[Any, Any, Any]) -> Response[str]:
    return page(request, "login.html", failed=False, username="", next=_safe_next(request.query_params.get("next")))


class LoginForm(msgspec.Struct):
    """The log-in form."""

    username: Filled
    password: Filled
    next: str = "/contracts"


@post("/login", name="web:login-submit", status_code=303)
async def login_submit(request: Request[Any, Any, Any], conn: Conn, data: Annotated[LoginForm, Body(media_type=RequestEncodingType.URL_ENCODED)]) -> Response[Any]:
    settings = request.app.state.settings
    client = request.client.host if request.client else ""
    if _cross_site(request):
        # Login CSRF: another site's form would log the browser in to an account of that site's choosing.
        log.info("web_login_cross_site", origin=request.headers.get("origin"), fetch_site=request.headers.get("sec-fetch-site"))
        return error_page(request, 403, translate(language_of(request), "error.login_cross_site"))
    form = {"username": data.username, "next": _safe_next(data.next)}
    try:
        session_id, principal = await auth.login(conn, data.username, data.password, max_age_s=settings.session_max_age_s, client=client)
    except auth.LoginFailed:
        log.info("web_login_failed", username=data.username)
        return page(request, "login.html", status_code=401, failed=True, **form)
    except auth.LoginThrottled as exc:
        response = page(request, "login.html", status_code=429, failed=False, retry_minutes=math.ceil(exc.retry_after_s / 60), **form)
        response.headers["Retry-After"] = str(exc.retry_after_s)
        return response
    log.info("web_login", username=principal.username, tenant=principal.tenant_id)
    cookie = Cookie(
        key=auth.SESSION_COOKIE, value=session_id, path="/", httponly=True, secure=settings.cookie_secure, samesite="lax", max_age=settings.session_max_age_s
    )
    return Redirect(_safe_next(data.next), status_code=303, cookies=[cookie])


def _cross_site(request: Request[Any, Any, Any]) -> bool:
    """Return whether a browser marks the log-in form as posted from another site (Sec-Fetch-Site, else Origin against Host).

    A client that sends neither header, such as a script, is not a browser page of another site, so it is let through.
    """
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site == "cross-site"
    origin = request.headers.get("origin")
    if origin is None:
        return False
    # Browsers without Sec-Fetch-Site: the Origin must name this host, as the browser or a reverse proxy gave it.
    hosts = {request.headers.get(name, "").lower() for name in ("host", "x-forwarded-host")} - {""}
    return urlsplit(origin).netloc.lower() not in hosts


@post("/logout", name="web:logout", status_code=303)
async def logout_submit(request: Request[Any, Any, Any], conn: Conn) -> Redirect:
    session_id = request.cookies.get(auth.SESSION_COOKIE)
    if session_id:
        await auth.logout(conn, session_id)
    return Redirect("/login", status_code=303, cookies=[Cookie(key=auth.SESSION_COOKIE, value="", path="/", max_age=0, httponly=True)])
