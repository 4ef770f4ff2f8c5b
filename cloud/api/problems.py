"""RFC 9457 problem details for every error the API returns, each with a stable ``code``."""

from __future__ import annotations

from typing import Any

import psycopg
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from ..store import StoreError

__all__ = ("PROBLEM_JSON", "problem_response", "exception_handlers")

log = structlog.get_logger("valuegate.cloud.api")
PROBLEM_JSON = "application/problem+json"

_CODES = {
    400: ("bad_request", "Bad request"),
    401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Forbidden"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    409: ("conflict", "Conflict"),
    413: ("payload_too_large", "Request body too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    422: ("invalid", "Unprocessable content"),
    429: ("too_many_requests", "Too many requests"),
    500: ("internal_error", "Internal server error"),
    503: ("unavailable", "Service unavailable"),
}


def problem_response(request: Request[Any, Any, Any], status: int, detail: str, *, code: str | None = None, **extra: Any) -> Response[Any]:
    default_code, title = _CODES.get(status, ("error", "Error"))
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, "code": code or default_code, "instance": request.url.path, **extra}
    return Response(body, status_code=status, media_type=PROBLEM_JSON)


def _http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if isinstance(exc, ValidationException):
        return problem_response(request, 400, exc.detail, code="validation_failed", errors=exc.extra or [])
    code = None
    if exc.status_code == 403 and "CSRF" in exc.detail:
        code = "csrf_failed"
    response = problem_response(request, exc.status_code, exc.detail, code=code)
    # Headers the exception names (Retry-After of a 429) go out with the problem.
    response.headers.update(exc.headers or {})
    return response


def _store(request: Request[Any, Any, Any], exc: StoreError) -> Response[Any]:
    return problem_response(request, exc.status, str(exc), code=exc.code)


def _internal(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.error("http_unhandled_error", path=request.url.path, method=request.method, error=repr(exc), exc_info=exc)
    return problem_response(request, 500, "the server failed to handle the request; the error is logged")


def _recursion(request: Request[Any, Any, Any], exc: RecursionError) -> Response[Any]:
    # msgspec gives up on a body nested deeper than the interpreter's recursion limit.
    if "deserializing" in str(exc):
        return problem_response(request, 400, "the JSON body is nested too deeply; send objects and arrays at most a few levels deep", code="bad_request")
    return _internal(request, exc)


def _data(request: Request[Any, Any, Any], exc: psycopg.DataError) -> Response[Any]:
    # A value PostgreSQL cannot hold (an id with a NUL byte, an integer beyond bigint) names nothing that exists.
    return problem_response(request, 400, f"a parameter holds a value the database cannot represent: {exc.__class__.__name__}", code="invalid_value")


exception_handlers: dict[Any, Any] = {HTTPException: _http, StoreError: _store, psycopg.DataError: _data, RecursionError: _recursion, Exception: _internal}
