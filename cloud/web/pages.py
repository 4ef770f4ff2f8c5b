"""Shared pieces of the web UI handlers: the page language, rendering, role checks and HTML error pages."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import msgspec
import psycopg
import structlog
from litestar import MediaType, Request, Response
from litestar.datastructures import Cookie
from litestar.exceptions import HTTPException, NotAuthorizedException, NotFoundException, PermissionDeniedException, ValidationException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.response import Redirect

from valuegate.cloud.api.inputs import control_character_errors
from valuegate.cloud.api.problems import FieldError, body_limit, field_errors
from valuegate.cloud.auth import CSRF_FORM_FIELD, CsrfRejected, Principal
from valuegate.cloud.store import Conflict, Invalid, NotFound, StoreError

from .i18n import LANGUAGE_COOKIE, catalog, normalize, pick_language, translate
from .templating import render

__all__ = (
    "FINANCE_VIEW",
    "CSM_EDIT",
    "Filled",
    "language_of",
    "document_language",
    "principal_of",
    "page",
    "html_exception_handlers",
    "unmatched_route_handler",
    "reject_control_characters",
    "with_language",
    "forbid_unless",
    "error_page",
    "parse_date",
    "error_text",
    "form_error_text",
)

log = structlog.get_logger("valuegate.cloud.web")

# Roles that may see invoices and exports; roles that may record non-routine adjustments or check triggers.
FINANCE_VIEW = ("finance", "admin", "auditor")
CSM_EDIT = ("csm", "admin")

Filled = Annotated[str, msgspec.Meta(min_length=1)]
"""A required text field of a form: an empty value is rejected like an absent one, before the handler runs."""


def language_of(request: Request[Any, Any, Any]) -> str:
    # The browser's Accept-Language is ignored on purpose: zh-CN stays the default until the user switches.
    return pick_language(request.query_params.get("lang"), request.cookies.get(LANGUAGE_COOKIE))


def document_language(request: Request[Any, Any, Any]) -> str:
    """Choose the language of a download: ``?lang=`` as on pages, then the older ``?language=``, then the page language."""
    return normalize(request.query_params.get("lang")) or normalize(request.query_params.get("language")) or language_of(request)


def with_language(request: Request[Any, Any, Any], target: str) -> str:
    """Return ``target`` with the request's ``?lang=`` added when it names a language, so that a redirect keeps it."""
    language = normalize(request.query_params.get("lang"))
    if not language:
        return target
    return f"{target}{'&' if '?' in target else '?'}lang={language}"


def principal_of(request: Request[Any, Any, Any]) -> Principal | None:
    return request.scope.get("user")


def forbid_unless(principal: Principal, *roles: str) -> None:
    """Raise 403 unless the caller has one of ``roles``."""
    if not principal.has(*roles):
        raise PermissionDeniedException(f"this needs one of the roles {', '.join(roles)}; you have {', '.join(sorted(principal.roles))}")


def parse_date(value: str, field: str) -> dt.date:
    """Parse a form's ``YYYY-MM-DD`` date, raising :class:`Invalid` that names the field."""
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        error = Invalid(f"{field} {value!r} is not a date; use YYYY-MM-DD", code="invalid_date")
        error.params = {"field": field, "value": value}  # type: ignore[attr-defined]
        raise error from exc


def _language_target(request: Request[Any, Any, Any]) -> str:
    """Return the path that the page's language links lead to: a page that accepts GET.

    After a form post the request's own path may accept only POST. So the links lead to the page that sent the form
    when the Referer names this site. Otherwise they lead to the contract or run the form belongs to, or to the contract list.
    """
    if request.method in ("GET", "HEAD"):
        return request.url.path
    referrer = urlsplit(request.headers.get("referer", ""))
    if referrer.netloc == request.url.netloc and referrer.path.startswith("/"):
        return referrer.path
    params = request.path_params
    if "contract_id" in params:
        return f"/contracts/{quote(str(params['contract_id']), safe='')}"
    if "run_id" in params:
        return f"/runs/{params['run_id']}"
    return "/contracts"


def page(request: Request[Any, Any, Any], template: str, *, status_code: int = 200, **context: Any) -> Response[str]:
    """Render ``template`` in the request's language; a valid ``?lang=`` on a page shown (status below 400) is remembered in a cookie."""
    language = language_of(request)
    principal = principal_of(request)
    html = render(
        template,
        language,
        user=principal,
        csrf_field=CSRF_FORM_FIELD,
        csrf_token=principal.csrf_token if principal is not None else "",
        path=_language_target(request),
        **context,
    )
    cookies = []
    # Only a page the user gets to see switches the language of the pages after it. An error page shows in the asked
    # language without changing it, as a download does.
    if normalize(request.query_params.get("lang")) and status_code < 400:
        cookies.append(Cookie(key=LANGUAGE_COOKIE, value=language, path="/", max_age=365 * 86400, samesite="lax"))
    return Response(html, media_type=MediaType.HTML, status_code=status_code, cookies=cookies)


def error_page(request: Request[Any, Any, Any], status: int, message: str, *, logout_form: bool = False) -> Response[str]:
    """Render an error; after a form post it links back to the page that sent the form, which the browser's Back keeps filled in."""
    form_page = _language_target(request) if request.method == "POST" else None
    return page(request, "error.html", status_code=status, status=status, message=message, logout_form=logout_form, form_page=form_page)


def _unauthorized(request: Request[Any, Any, Any], _exc: NotAuthorizedException) -> Response[Any]:
    if "authorization" in request.headers:
        # A program sent a token: a redirect to the log-in page would read as success to a client that follows it.
        log.info("web_token_rejected", path=request.url.path)
        return error_page(request, 401, translate(language_of(request), "error.token_rejected"))
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return Redirect(with_language(request, f"/login?next={quote(target, safe='')}"), status_code=303)


def _forbidden(request: Request[Any, Any, Any], exc: PermissionDeniedException) -> Response[str]:
    log.info("web_forbidden", path=request.url.path, detail=exc.detail, user=getattr(principal_of(request), "username", None))
    return error_page(request, 403, translate(language_of(request), "error.forbidden"))


def _form_expired(request: Request[Any, Any, Any], exc: CsrfRejected) -> Response[str]:
    # A page open in a tab from before the last log-in sends the old session's token, so the usual cause is a stale form.
    log.info("web_csrf_rejected", path=request.url.path, detail=exc.detail, user=getattr(principal_of(request), "username", None))
    if request.url.path == "/logout":
        # The session stays, because a forged post must not end it, but the page offers a log-out form with the session's
        # current token. Without a valid session there is no token to check, and the log-out itself goes ahead.
        return error_page(request, 403, translate(language_of(request), "error.logout_expired"), logout_form=True)
    return error_page(request, 403, translate(language_of(request), "error.form_expired"))


def _not_found(request: Request[Any, Any, Any], _exc: Exception) -> Response[str]:
    return error_page(request, 404, translate(language_of(request), "error.not_found"))


def _too_large(request: Request[Any, Any, Any], _exc: RequestEntityTooLarge) -> Response[str]:
    limit = body_limit(request)
    log.info("web_body_too_large", path=request.url.path, max_body_bytes=limit)
    return error_page(request, 413, translate(language_of(request), "error.body_too_large", limit=limit if limit is not None else "?"))


def _not_representable(request: Request[Any, Any, Any], exc: psycopg.DataError) -> Response[str]:
    # A safety net: reject_control_characters stops NUL bytes before any query, but another value PostgreSQL
    # cannot hold (an integer beyond its range) would otherwise reach the API's English problem details.
    log.info("web_value_not_representable", path=request.url.path, error=exc.__class__.__name__)
    return error_page(request, 400, translate(language_of(request), "error.not_representable"))


async def reject_control_characters(request: Request[Any, Any, Any]) -> None:
    """Stop a request whose path parameter or form field contains a control character before any handler or query runs.

    A path parameter with one names nothing that can exist, so the page is 404. A form field with one is rejected as
    invalid input that names the field. It is the ``before_request`` hook of the web router, so guards have already run.
    """
    if control_character_errors(request.path_params.items(), "path"):
        raise NotFoundException("a path parameter contains a control character")
    if request.content_type[0] not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return
    form = await request.form()
    errors = control_character_errors(form.multi_items(), "body")
    if errors:
        raise ValidationException("a form field contains a control character", extra=errors)


# Form fields named by input errors, and the catalog keys of their labels on the pages.
_FIELD_LABELS = {
    "period_first": "settlement.period_first",
    "period_last": "settlement.period_last",
    "first_date": "adjustment.first_date",
    "last_date": "adjustment.last_date",
    "reason": "adjustment.reason",
    "withdraw_reason": "adjustment.withdraw_reason",
    "anchor_id": "adjustment.anchor",
    "username": "login.username",
    "password": "login.password",
    "url": "webhook.url",
    "secret": "webhook.secret",
    "records": "bundle.records_parameter",
}

# The catalog keys saying what to enter in each form field that the pages show.
_FIELD_HINTS = {
    "period_first": "hint.date",
    "period_last": "hint.date",
    "first_date": "hint.date",
    "last_date": "hint.date",
    "reason": "hint.reason",
    "withdraw_reason": "hint.withdraw_reason",
    "anchor_id": "hint.anchor",
    "username": "hint.username",
    "password": "hint.password",
    "url": "hint.url",
    "secret": "hint.secret",
    "records": "hint.records",
}

# msgspec type names that have a catalog entry ``type.<name>``; any other shows as ``type.other``.
_TYPE_NAMES = ("str", "int", "float", "bool", "array", "object", "null")


def _type_name(language: str, name: str) -> str:
    return translate(language, f"type.{name if name in _TYPE_NAMES else 'other'}")


def form_error_text(language: str, error: FieldError) -> str:
    """Return what was wrong with one form field in ``language``, naming the field by its label and saying what to enter.

    A field the page does not show (a hidden field, or one the form never had) gets a message telling the user to reload the page,
    because the user cannot have typed it.
    """
    if error.field not in _FIELD_HINTS or error.kind == "unknown":
        return translate(language, "error.form_altered")
    field = translate(language, _FIELD_LABELS[error.field])
    hint = translate(language, _FIELD_HINTS[error.field])
    if error.kind in ("missing", "empty"):
        return translate(language, "error.field_missing", field=field, hint=hint)
    if error.kind == "control":
        return translate(language, "error.field_control", field=field, character=error.character)
    if error.kind == "type":
        expected, got = _type_name(language, error.expected), _type_name(language, error.got)
        return translate(language, "error.field_type", field=field, hint=hint, expected=expected, got=got)
    return translate(language, "error.field_invalid", field=field, hint=hint)


def error_text(language: str, exc: Exception, *, frame: str = "error.invalid") -> str:
    """Return the text of an input error or a conflict in ``language``, inside the catalog message ``frame``.

    An error that carries ``params`` is looked up by its ``code`` (and ``params["variant"]``) as ``error.<code>[.<variant>]``
    in the catalog, with ids, dates and other values inserted as given. Any other error shows its English message.
    """
    code, params = getattr(exc, "code", None), getattr(exc, "params", None)
    if code is not None and params is not None:
        key = f"error.{code}" + (f".{params['variant']}" if "variant" in params else "")
        if key in catalog(language):
            values = dict(params)
            if "field" in values:
                values["field"] = translate(language, _FIELD_LABELS.get(values["field"], values["field"]))
            return translate(language, frame, detail=translate(language, key, **values))
    return translate(language, frame, detail=getattr(exc, "detail", None) or str(exc))


def _invalid(request: Request[Any, Any, Any], exc: Exception) -> Response[str]:
    return error_page(request, 400, error_text(language_of(request), exc))


def _validation_failed(request: Request[Any, Any, Any], exc: ValidationException) -> Response[str]:
    # Litestar's own text ("Validation failed for POST ...") is English and names no field, so it is never shown.
    language = language_of(request)
    errors = field_errors(exc)
    log.info("web_validation_failed", path=request.url.path, errors=[f"{error.field}:{error.kind}" for error in errors])
    texts = list(dict.fromkeys(form_error_text(language, error) for error in errors)) or [translate(language, "error.form_altered")]
    return error_page(request, 400, translate(language, "error.invalid", detail=" ".join(texts)))


def _store_error(request: Request[Any, Any, Any], exc: StoreError) -> Response[str]:
    if isinstance(exc, NotFound):
        return _not_found(request, exc)
    conflict = isinstance(exc, Conflict)
    # A conflict comes from valid input that the stored state does not allow, so it is not framed as invalid input.
    text = error_text(language_of(request), exc, frame="error.conflict" if conflict else "error.invalid")
    return error_page(request, 409 if conflict else 400, text)


def unmatched_route_handler(api_handler: Any) -> Any:
    """Return the app-level handler of 404 and 405 for requests that matched no route.

    Paths of the API and /metrics keep ``api_handler``'s JSON problem details. Every other path is a web page, so it gets an HTML error page.
    """

    def handle(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
        path = request.url.path
        if api_handler is not None and (path in ("/api", "/metrics") or path.startswith("/api/")):
            return api_handler(request, exc)
        if exc.status_code == 405:
            return error_page(request, 405, translate(language_of(request), "error.method_not_allowed"))
        return error_page(request, 404, translate(language_of(request), "error.page_not_found"))

    return handle


html_exception_handlers: dict[Any, Any] = {
    NotAuthorizedException: _unauthorized,
    CsrfRejected: _form_expired,
    PermissionDeniedException: _forbidden,
    NotFoundException: _not_found,
    NotFound: _not_found,
    Invalid: _invalid,
    StoreError: _store_error,
    ValidationException: _validation_failed,
    psycopg.DataError: _not_representable,
    RequestEntityTooLarge: _too_large,
}
