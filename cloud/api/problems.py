"""RFC 9457 problem details for every error the API returns, each with a stable ``code``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import psycopg
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge

from ..auth import CsrfRejected
from ..store import StoreError
from .inputs import SINGLE_LINE_PATTERN

__all__ = ("PROBLEM_JSON", "FieldError", "field_errors", "body_limit", "problem_response", "exception_handlers")

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


# Messages of msgspec (as of 0.23) that Litestar (as of 2.25) passes on in ValidationException.extra, one per rejected input.
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>[^`]+)`$")
_WRONG_TYPE = re.compile(r"^Expected `(?P<expected>[^`]+)`, got `(?P<got>[^`]+)`$")
_EMPTY = re.compile(r"^Expected `(?:str|array|object)` of length >= 1$")
# The msgspec message for a JSON body's SingleLine text field that contains a control character.
_CONTROL_PATTERN = f"Expected `str` matching regex {SINGLE_LINE_PATTERN!r}"
# A required query, header or cookie parameter that is absent is reported in ``detail`` alone, with no ``extra``.
_MISSING_PARAMETER = re.compile(r"^Missing required (?P<source>\w+) parameter '(?P<name>[^']+)'")


_PARAMETER_SOURCES = ("query", "path", "header", "cookie")


@dataclass(frozen=True, slots=True)
class FieldError:
    """One input that request validation rejected."""

    field: str | None
    """Dotted path of the field in the body (``roles[0]``, ``statement.kind``) or the parameter name; None for the whole body."""
    source: str
    """Source of the input: ``body``, ``query``, ``path``, ``header``, ``cookie``, or empty when Litestar does not set it."""
    kind: str
    """``missing``, ``empty``, ``type`` (wrong JSON or form type), ``unknown`` (a field the body may not have), ``control``
    (text with a control character) or ``invalid``."""
    message: str
    """msgspec's English message, kept for the API's ``errors`` list."""
    expected: str = ""
    """For ``type``: the msgspec type name expected (``str``, ``int``, ``array`` ...)."""
    got: str = ""
    """For ``type``: the msgspec type name received."""
    character: str = ""
    """For ``control``: the first control character found, as ``U+XXXX``; empty when msgspec's pattern check found it."""


def _sent_names(request: Request[Any, Any, Any]) -> dict[str, str]:
    """Return the name a caller sends for each handler parameter whose Python name differs (``last`` is sent as ``to``)."""
    handler = request.scope.get("route_handler")
    signature = getattr(handler, "parsed_fn_signature", None)
    if signature is None:
        return {}
    names = {}
    for name, parameter in signature.parameters.items():
        kwarg = parameter.kwarg_definition
        # QueryParameter and its kin carry the sent name as ``name``; Parameter() carries it as ``query``, ``header`` or ``cookie``.
        sent = next((value for attribute in ("name", "query", "header", "cookie") if isinstance(value := getattr(kwarg, attribute, None), str)), None)
        if sent and sent != name:
            names[name] = sent
    return names


def _field_error(entry: dict[str, Any]) -> FieldError:
    message = str(entry.get("message", ""))
    source = str(getattr(entry.get("source"), "value", entry.get("source") or ""))
    key = entry.get("key")
    # A failure of the body as a whole has the key "data", and its field, if any, is named only in the message.
    parent = None if key in (None, "data") else str(key)
    if entry.get("kind") == "control" or message == _CONTROL_PATTERN:
        character = str(entry.get("character", ""))
        # msgspec's message shows the regular expression, which means nothing to a caller, so the listed message names what was found.
        found = f"contains the control character {character}" if character else "contains a control character"
        return FieldError(parent, source, "control", found, character=character)
    for kind, pattern in (("missing", _MISSING), ("unknown", _UNKNOWN)):
        if found := pattern.match(message):
            field = found["name"] if parent is None else f"{parent}.{found['name']}"
            return FieldError(field, source, kind, message)
    if found := _WRONG_TYPE.match(message):
        return FieldError(parent, source, "type", message, found["expected"], found["got"])
    if key == "data" and message == "'data'":
        # Litestar found no body at all; its message is the repr of the KeyError.
        return FieldError(None, source, "missing", "the request body is empty")
    kind = "empty" if _EMPTY.match(message) else "invalid"
    return FieldError(parent, source, kind, message)


def field_errors(exc: ValidationException, sent_names: dict[str, str] | None = None) -> list[FieldError]:
    """Return the rejected inputs of a Litestar ValidationException, parsed from its ``extra`` list or else its ``detail``.

    Litestar (as of 2.25) keys a rejected parameter by the handler's Python
    name, so ``sent_names`` maps each such name to the one the caller sent.
    """
    extra = exc.extra if isinstance(exc.extra, list) else []
    errors = [_field_error(entry) for entry in extra if isinstance(entry, dict)]
    renamed = sent_names or {}
    errors = [replace(e, field=renamed[e.field]) if e.source in _PARAMETER_SOURCES and e.field in renamed else e for e in errors]
    if not errors and (found := _MISSING_PARAMETER.match(exc.detail or "")):
        errors.append(FieldError(found["name"], found["source"], "missing", exc.detail))
    return errors


def _describe(error: FieldError) -> str:
    if error.field is None:
        subject = "the request body"
    elif error.source in _PARAMETER_SOURCES:
        subject = f"{error.source} parameter `{error.field}`"
    else:
        subject = f"field `{error.field}` of the request body"
    if error.kind == "missing":
        return f"{subject} is missing; add it"
    if error.kind == "unknown":
        return f"the request body contains the unknown field `{error.field}`; remove it or check its spelling"
    if error.kind == "empty":
        return f"{subject} is empty; give it a value"
    if error.kind == "type":
        return f"{subject} must be {error.expected}, not {error.got}"
    if error.kind == "control":
        which = f"the control character {error.character}" if error.character else "a control character"
        return f"{subject} contains {which}; remove it, because no control character but the tab is allowed"
    return f"{subject} is invalid ({error.message[:1].lower()}{error.message[1:]}); correct the value"


def _validation_detail(errors: Sequence[FieldError], fallback: str) -> str:
    """Return the problem ``detail`` of rejected inputs, each named with what to send instead; ``fallback`` when none is parsed."""
    if not errors:
        return fallback
    return "; ".join(_describe(error) for error in errors)


def problem_response(request: Request[Any, Any, Any], status: int, detail: str, *, code: str | None = None, **extra: Any) -> Response[Any]:
    default_code, title = _CODES.get(status, ("error", "Error"))
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, "code": code or default_code, "instance": request.url.path, **extra}
    return Response(body, status_code=status, media_type=PROBLEM_JSON)


def _http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if isinstance(exc, ValidationException):
        errors = field_errors(exc, _sent_names(request))
        listed = [{"field": e.field, "source": e.source, "kind": e.kind, "message": e.message} for e in errors]
        return problem_response(request, 400, _validation_detail(errors, exc.detail), code="validation_failed", errors=listed)
    code = "csrf_failed" if isinstance(exc, CsrfRejected) else None
    detail = exc.detail
    if exc.status_code == 400 and detail.startswith(_JSON_DECODE_ERRORS):
        # msgspec's decode errors name no remedy, so the message states that the body is broken and what to send.
        cause = detail if detail[:2].isupper() else detail[:1].lower() + detail[1:]
        detail = f"the request body is not valid JSON ({cause}); send one complete JSON document"
    response = problem_response(request, exc.status_code, detail, code=code)
    # Headers the exception names (Retry-After of a 429) go out with the problem.
    response.headers.update(exc.headers or {})
    return response


# The beginnings of msgspec's JSON decode errors, which Litestar passes on as a 400.
_JSON_DECODE_ERRORS = ("Input data was truncated", "JSON is malformed")


def body_limit(request: Request[Any, Any, Any]) -> int | None:
    """Return the cloud's ``max_body_bytes`` setting, or None when the app carries no settings."""
    settings = getattr(request.app.state, "settings", None)
    return getattr(settings, "max_body_bytes", None)


def _too_large(request: Request[Any, Any, Any], exc: RequestEntityTooLarge) -> Response[Any]:
    limit = body_limit(request)
    if limit is None:
        return problem_response(request, 413, "the request body is too large; send a smaller body")
    detail = (f"the request body is larger than {limit} bytes, the limit the cloud setting max_body_bytes sets; "
              "send a smaller body, or ask the operator to raise max_body_bytes")
    return problem_response(request, 413, detail, max_body_bytes=limit)


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
    # A safety net. Parameters and one-line body fields with a NUL byte are rejected before any query, but a value
    # PostgreSQL cannot hold may still arrive elsewhere (a NUL byte deep in a JSON object, an integer beyond bigint).
    log.info("http_value_not_representable", path=request.url.path, method=request.method, error=exc.__class__.__name__)
    return problem_response(request, 400, f"a parameter holds a value the database cannot represent: {exc.__class__.__name__}", code="invalid_value")


exception_handlers: dict[Any, Any] = {HTTPException: _http, RequestEntityTooLarge: _too_large, StoreError: _store, psycopg.DataError: _data, RecursionError: _recursion, Exception: _internal}
