"""Web pages of renewal-prep packages: check the triggers, view a package, download its parts."""

from __future__ import annotations

import datetime as dt
import io
import ipaddress
import re
import zipfile
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import idna
import msgspec
import structlog
from typing import Annotated

from litestar import MediaType, Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath
from litestar.background_tasks import BackgroundTask
from litestar.response import Redirect

from valuegate.cloud.api.deps import Conn
from valuegate.cloud.auth import requires
from valuegate.cloud.renewal import service as renewal
from valuegate.cloud.renewal.package import trigger_text
from valuegate.cloud.renewal.targets import HostUnresolved, TargetRejected, mask_url, resolve_target
from valuegate.cloud.renewal import checks
from valuegate.cloud.renewal.loop import start_job
from valuegate.cloud.renewal.triggers import Firing
from valuegate.cloud.settlement.store import load_contract
from valuegate.cloud.store import Conflict, Invalid, NotFound

from .i18n import translate
from .pages import CSM_EDIT, Filled, document_language, language_of, page, principal_of


class WebhookForm(msgspec.Struct):
    """The webhook form of the contracts page (administrators only)."""

    url: Filled
    secret: Filled

__all__ = ("check_renewal", "check_page", "package_page", "deliver_package", "package_archive", "package_member", "set_webhook", "trigger_label")

log = structlog.get_logger("valuegate.cloud.web")
ANY_ROLE = requires()


def trigger_label(package: dict[str, Any], contract: Any, language: str) -> str:
    """Describe a stored package's trigger in ``language``."""
    return trigger_text(Firing(package["trigger_key"], package["trigger_kind"], dict(package["detail"] or {})), language, contract)


async def _deliver_all(settings: Any, tenant: str, package_ids: list[int]) -> None:
    for package_id in package_ids:
        try:
            await renewal.deliver_package(settings.dsn, tenant, package_id, allowed_networks=settings.webhook_networks)
        except Conflict:
            continue  # another loop delivers this package already
        except Exception as exc:  # a failed delivery must not lose the others; each attempt is recorded
            log.error("webhook_delivery_crashed", tenant=tenant, package=package_id, error=str(exc))


async def _deliver_claimed(claim: Any, settings: Any) -> None:
    try:
        await renewal.deliver_claimed(claim, allowed_networks=settings.webhook_networks)
    except Exception as exc:  # each attempt is recorded; the user has had the response already
        log.error("webhook_delivery_crashed", tenant=claim.tenant_id, package=claim.package_id, error=str(exc))


async def _check_and_deliver(pool: Any, settings: Any, claim: checks.CheckClaim) -> None:
    created = await checks.run_check(pool, claim, today=dt.datetime.now(dt.UTC).date())
    # Deliveries retry with backoff, so they start only after the check has released the contract.
    await _deliver_all(settings, claim.tenant_id, [p["id"] for p in created])


@post("/contracts/{contract_id:str}/renewal-check", guards=[requires(*CSM_EDIT)], name="web:renewal-check", status_code=303)
async def check_renewal(request: Request[Any, Any, Any], conn: Conn, contract_id: FromPath[str]) -> Redirect:
    """Start the contract's renewal check in the background and show its page; while a check runs, start none and show that one."""
    principal = principal_of(request)
    await load_contract(conn, principal.tenant_id, contract_id)
    settings = request.app.state.settings
    claim = await checks.claim_check(settings.dsn, principal.tenant_id, contract_id, actor=principal.actor)
    if claim is None:
        return Redirect(f"/contracts/{contract_id}/renewal-check?done=renewal.check_running", status_code=303)
    start_job(request.app, _check_and_deliver(request.app.state.pool, settings, claim), name=f"renewal-check:{principal.tenant_id}:{contract_id}")
    return Redirect(f"/contracts/{contract_id}/renewal-check?done=renewal.check_started", status_code=303)


# Seconds between reloads of a running check's page; the page reloads itself through the Refresh header, without scripts.
CHECK_REFRESH_S = 3
_CHECK_FLASHES = {"renewal.check_started": "renewal.check_started", "renewal.check_running": "renewal.check_already_running"}


@get("/contracts/{contract_id:str}/renewal-check", guards=[ANY_ROLE], name="web:renewal-check-page")
async def check_page(request: Request[Any, Any, Any], conn: Conn, contract_id: FromPath[str]) -> Response[str]:
    """Show the contract's latest renewal check: its step while it runs, then the packages it built or the triggers waiting for vouchers."""
    principal = principal_of(request)
    language = language_of(request)
    contract, _ = await load_contract(conn, principal.tenant_id, contract_id)
    state = await checks.check_state(conn, principal.tenant_id, contract_id)
    waiting = []
    if state is not None:
        waiting = [trigger_text(Firing(item["key"], item["kind"], dict(item["detail"] or {})), language, contract) for item in state["waiting"]]
    done = request.query_params.get("done")
    response = page(
        request, "renewal/check.html", contract=contract, check=state, waiting=waiting, can_check=principal.has(*CSM_EDIT),
        flash=translate(language, _CHECK_FLASHES[done]) if done in _CHECK_FLASHES else None,
    )
    if state is not None and state["state"] == "running":
        # The reload drops ?done=, so the note about the click shows only once.
        response.headers["Refresh"] = f"{CHECK_REFRESH_S}; url=/contracts/{quote(contract_id, safe='')}/renewal-check"
    return response


async def _package(request: Request[Any, Any, Any], conn: Any, package_id: int) -> dict[str, Any]:
    return await renewal.get_package(conn, principal_of(request).tenant_id, package_id)


# The notes that the package page shows after a "Deliver again" click, by the ``done`` value of the redirect.
_FLASHES = {"renewal.redeliver": "renewal.redelivery_started", "renewal.delivery_running": "renewal.delivery_running"}


@get("/packages/{package_id:int}", guards=[ANY_ROLE], name="web:package")
async def package_page(request: Request[Any, Any, Any], conn: Conn, package_id: FromPath[int]) -> Response[str]:
    # The detail carries the package's fields, its delivery state and every attempt, read once.
    package = await renewal.package_detail(conn, principal_of(request).tenant_id, package_id)
    language = language_of(request)
    contract, _ = await load_contract(conn, principal_of(request).tenant_id, package["contract_id"])
    return page(
        request, "package.html", package=package, trigger_text=trigger_label(package, contract, language),
        talking_points=package["talking_points"].get(language, []), deliveries=package["deliveries"], can_deliver=principal_of(request).has(*CSM_EDIT),
        delivery=package["delivery"],
        flash=translate(language, _FLASHES[done]) if (done := request.query_params.get("done")) in _FLASHES else None,
    )


@post("/packages/{package_id:int}/deliver", guards=[requires(*CSM_EDIT)], name="web:deliver-package", status_code=303)
async def deliver_package(request: Request[Any, Any, Any], conn: Conn, package_id: FromPath[int]) -> Redirect:
    """Send a package to the webhook again, for example after every attempt failed or when it was built before the webhook was set."""
    principal = principal_of(request)
    await renewal.request_redelivery(conn, principal.tenant_id, package_id, actor=principal.actor)
    try:
        claim = await renewal.claim_delivery(request.app.state.settings.dsn, principal.tenant_id, package_id)
    except Conflict:
        # A second click while the first delivery runs: nothing is sent or audited, and the page explains why.
        await conn.rollback()
        return Redirect(f"/packages/{package_id}?done=renewal.delivery_running", status_code=303)
    try:
        await conn.commit()
    except BaseException:
        await claim.release()
        raise
    # The attempts back off for minutes, so they run after the response has gone out.
    return Redirect(f"/packages/{package_id}?done=renewal.redeliver", status_code=303, background=BackgroundTask(_deliver_claimed, claim, request.app.state.settings))


@get("/packages/{package_id:int}/package.zip", guards=[ANY_ROLE], name="web:package-archive")
async def package_archive(request: Request[Any, Any, Any], conn: Conn, package_id: FromPath[int]) -> Response[bytes]:
    package = await _package(request, conn, package_id)
    name = f"{package['contract_id']}.renewal-{package_id}.zip"
    return Response(bytes(package["archive"]), media_type="application/zip", headers={"Content-Disposition": f'attachment; filename="{name}"'})


_MEMBERS = {"summary.html": MediaType.HTML, "summary.pdf": "application/pdf", "bundle.zip": "application/zip"}


@get("/packages/{package_id:int}/{member:str}", guards=[ANY_ROLE], name="web:package-member")
async def package_member(request: Request[Any, Any, Any], conn: Conn, package_id: FromPath[int], member: FromPath[str]) -> Response[bytes]:
    if member not in _MEMBERS:
        raise NotFound(f"package part {member!r} not found; choose one of {', '.join(_MEMBERS)}")
    package = await _package(request, conn, package_id)
    language = document_language(request)
    stem, _, suffix = member.partition(".")
    name = "bundle.zip" if member == "bundle.zip" else f"{stem}.{language}.{suffix}"
    with zipfile.ZipFile(io.BytesIO(bytes(package["archive"]))) as archive:
        if name not in archive.namelist():
            raise NotFound(f"package {package_id} has no {name}")
        body = archive.read(name)
    headers = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:"} if suffix == "html" else {}
    return Response(body, media_type=_MEMBERS[member], headers=headers)


def _url_error(message: str, code: str, url: str) -> Invalid:
    error = Invalid(message, code=code)
    error.params = {"field": "url", "value": url}  # type: ignore[attr-defined]
    return error


# An ASCII label of letters, digits, hyphens and underscores, with no hyphen at either end.
_ASCII_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def _valid_host(host: str) -> bool:
    """Return whether ``host`` is an IP address or a host name that IDNA 2008 can encode: LDH labels or an internationalized name.

    An ASCII name may also hold underscores. DNS allows them (RFC 2181, section 11) and internal names such as
    container service names use them, while IDNA rejects them.
    """
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    if host.isascii() and "_" in host:
        labels = host.removesuffix(".").split(".")
        return len(host) <= 253 and all(_ASCII_LABEL.fullmatch(label) and not label.lower().startswith("xn--") for label in labels)
    try:
        idna.encode(host)
    except (idna.IDNAError, UnicodeError):
        return False
    return True


def _checked_webhook_url(url: str) -> str:
    """Return ``url`` with its scheme in lower case, or raise :class:`Invalid` naming it.

    The URL must be http:// or https:// with a valid port and a host that is an IP address or a host name IDNA 2008
    can encode. Schemes are case-insensitive (RFC 3986, section 3.1), so ``HTTPS://`` is accepted and stored as
    ``https://``. httpx, which sends the deliveries, fails before it connects on a non-ASCII host it cannot encode and
    on a dotted-decimal host that is no IPv4 address, so a saved URL with such a host would fail every delivery.
    """
    scheme, _, rest = url.partition(":")
    if scheme.lower() not in ("http", "https") or not rest.startswith("//"):
        raise _url_error(f"webhook URL {url!r} must start with http:// or https://", "invalid_url", url)
    normalized = f"{scheme.lower()}:{rest}"
    try:
        parts = urlsplit(normalized)
        host, _ = parts.hostname, parts.port
    except ValueError as exc:
        # urlsplit rejects an unclosed IPv6 bracket, and .port a port that is not a number from 0 to 65535.
        raise _url_error(f"webhook URL {url!r} is not a valid URL ({exc}); enter the full address", "malformed_url", url) from exc
    # str.strip also removes Unicode spaces such as U+3000, so a host of only spaces counts as none.
    if not host or not host.strip():
        raise _url_error(f"webhook URL {url!r} has no host name; enter the full address, such as https://crm.example.com/hooks", "url_without_host", url)
    if "@" in parts.netloc:
        # The user name and password would go into logs and pages with the URL; the HMAC signature authenticates deliveries instead.
        raise _url_error(f"webhook URL {mask_url(url)!r} contains a user name or password; remove them, because the signing secret "
                         "authenticates each delivery", "url_with_credentials", mask_url(url))
    if not _valid_host(host):
        error = _url_error(f"webhook URL {url!r} has the invalid host name {host!r}; use letters, digits, hyphens, underscores and dots, or an IP address", "invalid_host", url)
        error.params["host"] = host  # type: ignore[attr-defined]
        raise error
    try:
        # The delivery parses the URL with httpx, which also rejects a dotted-decimal host that is no IPv4 address.
        httpx.URL(normalized)
    except (httpx.InvalidURL, idna.IDNAError) as exc:
        raise _url_error(f"webhook URL {url!r} is not a valid URL ({exc}); enter the full address", "malformed_url", url) from exc
    return normalized


async def _check_target(request: Request[Any, Any, Any], url: str) -> None:
    """Raise :class:`Invalid` when the host of ``url`` is, or resolves to, an address that deliveries may not reach.

    Each delivery attempt checks the address again, because DNS answers change.
    """
    parsed = httpx.URL(url)
    host = parsed.raw_host.decode("ascii")
    try:
        await resolve_target(host, parsed.port or (443 if parsed.scheme == "https" else 80), request.app.state.settings.webhook_networks)
    except TargetRejected as exc:
        error = _url_error(f"webhook URL {mask_url(url)!r}: {exc}", "webhook_target_rejected", mask_url(url))
        kind = translate(language_of(request), f"webhook.address_kind.{exc.reason}")
        variant = "address" if host == str(exc.address) else "resolved"
        error.params.update(host=host, address=str(exc.address), kind=kind, variant=variant)  # type: ignore[attr-defined]
        raise error from None
    except HostUnresolved as exc:
        error = _url_error(f"webhook URL {mask_url(url)!r}: {exc}", "webhook_host_unresolved", mask_url(url))
        error.params["host"] = host  # type: ignore[attr-defined]
        raise error from None


async def _unmasked(conn: Any, tenant_id: str, url: str) -> str:
    """Return the stored webhook URL when ``url`` is its masked form, as the contracts page shows it; otherwise ``url``.

    So an administrator who changes only the secret keeps the query values
    that the page does not show.
    """
    cur = await conn.execute("SELECT url FROM webhook_endpoints WHERE tenant_id = %s", (tenant_id,))
    row = await cur.fetchone()
    if row is not None and row[0] != url and mask_url(row[0]) == url:
        return str(row[0])
    return url


@post("/settings/webhook", guards=[requires("admin")], name="web:set-webhook", status_code=303)
async def set_webhook(request: Request[Any, Any, Any], conn: Conn, data: Annotated[WebhookForm, Body(media_type=RequestEncodingType.URL_ENCODED)]) -> Redirect:
    """Set the tenant's renewal webhook; the secret is stored for signing and never shown again."""
    url, secret = _checked_webhook_url(data.url.strip()), data.secret.strip()
    if len(secret) < 16:
        error = Invalid("the webhook secret is shorter than 16 characters; choose a longer random one", code="weak_secret")
        error.params = {}  # type: ignore[attr-defined]
        raise error
    principal = principal_of(request)
    url = await _unmasked(conn, principal.tenant_id, url)
    await _check_target(request, url)
    await renewal.set_endpoint(conn, principal.tenant_id, url, secret, actor=principal.actor)
    return Redirect("/contracts?done=webhook.saved", status_code=303)
