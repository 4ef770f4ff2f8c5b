"""The Litestar application: REST API, web UI routes, auth, problem details, logs and metrics; and an in-process server.

``create_app(settings)`` builds the app. The web UI's handlers come from
``valuegate.cloud.web.routes.route_handlers``. When ``valuegate.cloud.web``
defines ``configure(app_config)``, the app calls it with the ``AppConfig``
before building, so the web UI can add middleware, lifespans or static files.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import structlog
import uvicorn
from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.datastructures import MutableScopeHeaders, State
from litestar.middleware import ASGIMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from psycopg_pool import AsyncConnectionPool

from . import metrics
from .api import API_PREFIX, api_router, metrics_endpoint
from .api.problems import exception_handlers
from .auth import AuthMiddleware
from .db import open_pool
from .settings import CloudSettings
from .web.i18n import set_display_time_zone

__all__ = ("OPENAPI_PATH", "create_app", "ApiServer")

log = structlog.get_logger("valuegate.cloud.http")
OPENAPI_PATH = f"{API_PREFIX}/schema/openapi.json"


# The scope state key under which AccessLogMiddleware leaves a request to the hook of response_start_hook, with its start time.
_UNLOGGED_SINCE = "valuegate.access_log_started"


def _log_request(scope: Scope, status: int, started: float) -> None:
    # The full route template, router prefix included, so that /api/v1/contracts/{contract_id}
    # and the web page /contracts/{contract_id} count apart.
    handler = scope.get("route_handler")
    route = scope.get("path_template") or (sorted(handler.paths)[0] if handler is not None and getattr(handler, "paths", None) else "unmatched")
    seconds = time.perf_counter() - started
    metrics.HTTP_REQUESTS.labels(scope["method"], route, str(status)).inc()
    metrics.HTTP_SECONDS.labels(route).observe(seconds)
    user = scope.get("user")
    log.info("http_request", method=scope["method"], path=scope["path"], status=status, ms=round(seconds * 1000, 1), user=getattr(user, "username", None))


class AccessLogMiddleware(ASGIMiddleware):
    """Log one event per request (method, path, status, duration, user) and count it; headers and bodies are never logged.

    The status is the one the client receives. An exception can leave this
    middleware before a response has started, such as the 401 or 403 that
    AuthMiddleware raises. Litestar's app-level exception handler builds that
    response afterwards, so the ``before_send`` hook of
    :func:`response_start_hook` logs the request when the response starts.
    """

    scopes = ("http",)  # type: ignore[assignment]

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        started = time.perf_counter()
        status: int | None = None
        handed_over = False

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await next_app(scope, receive, send_status)
        except Exception:
            if status is None:
                scope.setdefault("state", {})[_UNLOGGED_SINCE] = started
                handed_over = True
            raise
        finally:
            if not handed_over:
                _log_request(scope, 500 if status is None else status, started)


def _security_headers(headers: MutableScopeHeaders, *, https: bool) -> None:
    """Add the security headers of every response; a Content-Security-Policy that a handler has set is kept, with frame-ancestors added."""
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    headers.setdefault("Referrer-Policy", "same-origin")
    policy = headers.get("Content-Security-Policy")
    if policy is None:
        headers["Content-Security-Policy"] = "frame-ancestors 'none'"
    elif "frame-ancestors" not in policy:
        headers["Content-Security-Policy"] = f"{policy.rstrip('; ')}; frame-ancestors 'none'"
    if https:
        # Sent only when the deployment uses HTTPS (cookie_secure), because over plain HTTP a browser ignores it anyway.
        headers.setdefault("Strict-Transport-Security", "max-age=31536000")


def response_start_hook(settings: CloudSettings) -> Any:
    """Return the app's ``before_send`` hook: security headers on every response, and the access log of requests handed over."""

    async def log_response_start(message: Message, scope: Scope) -> None:
        if message["type"] != "http.response.start":
            return
        _security_headers(MutableScopeHeaders.from_message(message), https=settings.cookie_secure)
        started = scope.get("state", {}).pop(_UNLOGGED_SINCE, None)
        if started is not None:
            _log_request(scope, message["status"], started)

    return log_response_start


def _web_parts() -> tuple[list[Any], Any]:
    from valuegate.cloud.web import routes

    configure = None
    with contextlib.suppress(ImportError, AttributeError):
        from valuegate.cloud import web

        configure = getattr(web, "configure", None)
    return list(routes.route_handlers), configure


def create_app(settings: CloudSettings, *, pool: AsyncConnectionPool | None = None, listen_url: str | None = None) -> Litestar:
    """Build the application; it opens its own connection pool at start-up unless ``pool`` is given.

    ``listen_url``, when given, goes into the start-up log line so that operators see where the API responds.
    """
    set_display_time_zone(settings.display_time_zone)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        own = pool is None
        app.state.pool = pool if pool is not None else await open_pool(
            settings.dsn, min_size=settings.pool_min, max_size=settings.pool_max, name="valuegate-api", wait_s=settings.startup_wait_s
        )
        if listen_url is None:
            log.info("api_started")
        else:
            log.info("api_started", url=listen_url)
        try:
            yield
        finally:
            if own:
                await app.state.pool.close()
            log.info("api_stopped")

    web_handlers, configure = _web_parts()
    config = AppConfig(
        route_handlers=[api_router(), metrics_endpoint, *web_handlers],
        lifespan=[lifespan],
        middleware=[AccessLogMiddleware(), AuthMiddleware()],
        before_send=[response_start_hook(settings)],
        exception_handlers=exception_handlers,
        openapi_config=OpenAPIConfig(
            title="valuegate cloud API",
            version="1",
            path=f"{API_PREFIX}/schema",
            description="Verified value vouchers, contracts, realized value and KPIs. Errors are RFC 9457 problem details with a stable `code`.",
        ),
        request_max_body_size=settings.max_body_bytes,
        state=State({"settings": settings}),
    )
    if configure is not None:
        configure(config)
    return Litestar.from_config(config)


class ApiServer:
    """Serve the app with uvicorn on a loopback port inside the running event loop; ``async with ApiServer(settings) as s: s.url``."""

    def __init__(self, settings: CloudSettings, *, pool: AsyncConnectionPool | None = None, port: int | None = None) -> None:
        from valuegate.services import free_port

        self.settings = settings
        self.port = port or settings.port or free_port()
        self.app = create_app(settings, pool=pool)
        self._server = uvicorn.Server(uvicorn.Config(self.app, host=settings.host, port=self.port, log_config=None, access_log=False, lifespan="on"))
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    async def __aenter__(self) -> ApiServer:
        self._task = asyncio.create_task(self._server.serve(), name=f"api:{self.port}")
        deadline = time.monotonic() + 30
        while not self._server.started:
            if self._task.done():
                await self._task
                raise RuntimeError(f"the API server on port {self.port} stopped during start-up; is the port taken?")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API server on port {self.port} did not start within 30 s")
            await asyncio.sleep(0.02)
        log.info("api_started", url=self.url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Ask uvicorn to finish open requests and stop; safe to call twice."""
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        log.info("api_stopped", url=self.url)
