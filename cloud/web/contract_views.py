"""Web pages of contracts: the list, the value report with charts and findings, machine drill-down, adjustments."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any, NamedTuple

import msgspec
from litestar import Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath
from litestar.response import Redirect

from valuegate.cloud import reports
from valuegate.cloud.api.deps import Conn
from valuegate.cloud.auth import requires
from valuegate.cloud.contracts import list_contracts
from valuegate.cloud.renewal import service as renewal
from valuegate.cloud.settlement import store as settlement
from valuegate.cloud.settlement.gaps import missing_runs
from valuegate.cloud.store import Invalid, NotFound

from .anchor_cards import MODES, anchor_views, group_finding, pareto_bars, pareto_labels
from .billing_findings import chain_gap_finding, claimed_values, gap_findings, rejection_findings
from .charts import pareto_chart
from .i18n import translate
from .pages import CSM_EDIT, FINANCE_VIEW, Filled, forbid_unless, language_of, page, parse_date, principal_of
from .queries import Downtime, chain_gaps, gap_vouchers, machine_period_totals, rejection_groups, rejections, unreproduced_vouchers
from .reasons import rejection_text
from .recomputation import CauseGroup, group_vouchers
from .renewal_views import trigger_label

__all__ = ("contracts_page", "contract_page", "anchor_page", "machine_page", "add_adjustment", "withdraw_adjustment")

ANY_ROLE = requires()
# A contract with more anchors than this shows them in a summary table, each linking to its own page with the two charts.
# A gain chart of 365 daily vouchers is about 90 KB of SVG, so 8 charted anchors add about 0.7 MB of charts to the page.
CHARTED_ANCHORS_MAX = 8
# Vouchers per page of the contract page's voucher table.
VOUCHER_PAGE_SIZE = 500

# Kept under their former names for callers outside this module.
_pareto_bars, _pareto_labels = pareto_bars, pareto_labels


@get("/contracts", guards=[ANY_ROLE], name="web:contracts")
async def contracts_page(request: Request[Any, Any, Any], conn: Conn) -> Response[str]:
    principal = principal_of(request)
    rows = await list_contracts(conn, principal.tenant_id)
    contracts = []
    for row in rows:
        contract, _ = await settlement.load_contract(conn, principal.tenant_id, row["id"])
        contracts.append(contract)
    webhook = None
    if principal.has("admin"):
        cur = await conn.execute("SELECT url FROM webhook_endpoints WHERE tenant_id = %s", (principal.tenant_id,))
        found = await cur.fetchone()
        webhook = {"url": found[0] if found else ""}
    language = language_of(request)
    flash = translate(language, "webhook.saved") if request.query_params.get("done") == "webhook.saved" else None
    return page(request, "contracts.html", contracts=contracts, webhook=webhook, flash=flash)


class _Cards(NamedTuple):
    """The anchor cards of a contract, with the findings read to build them that the contract page lists too."""

    contract: Any
    total: Any
    anchors: list[dict[str, Any]]
    groups: list[CauseGroup]
    gap_rows: list[dict[str, Any]]
    gap_chains: list[dict[str, Any]]
    missing: Any


async def _cards(conn: Any, tenant: str, contract_id: str, language: str, *, only: str | None = None) -> _Cards:
    """Build the anchor cards of a contract: all of them charted up to :data:`CHARTED_ANCHORS_MAX` anchors, else only ``only``."""
    contract, states, charges, total = await renewal.progress(conn, tenant, contract_id)
    if only is not None and only not in {anchor.id for anchor in contract.anchors}:
        raise NotFound(f"value anchor {only!r} is not in contract {contract_id!r}")
    groups = group_vouchers(await unreproduced_vouchers(conn, tenant, contract_id))
    gap_rows = await gap_vouchers(conn, tenant, contract_id)
    gap_chains = await chain_gaps(conn, tenant, contract_id)
    missing = await missing_runs(conn, tenant, [row["gateway_id"] for row in gap_rows + gap_chains])
    if only is not None:
        charted = {only}
    elif len(contract.anchors) <= CHARTED_ANCHORS_MAX:
        charted = {anchor.id for anchor in contract.anchors}
    else:
        charted = set()
    gaps = gap_findings(gap_rows, language, missing, tenant)
    anchors = await anchor_views(conn, tenant, contract, states, charges, language, groups, gaps, charted=charted)
    return _Cards(contract, total, anchors, groups, gap_rows, gap_chains, missing)


# Most digits a voucher page number may have: 15 digits times the page size stay within PostgreSQL's bigint offset.
_PAGE_DIGITS_MAX = 15


def _voucher_page(request: Request[Any, Any, Any]) -> int:
    """Return the page number of the voucher table from ``?vouchers=``, 1 when absent."""
    text = request.query_params.get("vouchers")
    if text is None:
        return 1
    # isdigit() alone also accepts digits such as "²" that int() rejects.
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        error = Invalid(f"voucher page {text!r} is not a whole number from 1; use ?vouchers=1 for the first page", code="invalid_page")
        error.params = {"value": text}  # type: ignore[attr-defined]
        raise error
    if len(text) > _PAGE_DIGITS_MAX:
        error = Invalid(f"voucher page {text!r} is larger than any page; use ?vouchers=1 for the first page", code="invalid_page")
        error.params = {"value": text, "variant": "too_large"}  # type: ignore[attr-defined]
        raise error
    return int(text)


@get("/contracts/{contract_id:str}", guards=[ANY_ROLE], name="web:contract")
async def contract_page(request: Request[Any, Any, Any], conn: Conn, contract_id: FromPath[str]) -> Response[str]:
    principal = principal_of(request)
    tenant = principal.tenant_id
    language = language_of(request)
    number = _voucher_page(request)
    cards = await _cards(conn, tenant, contract_id, language)
    contract = cards.contract

    listed = await reports.contract_vouchers(conn, tenant, contract_id, limit=VOUCHER_PAGE_SIZE, offset=(number - 1) * VOUCHER_PAGE_SIZE)
    pages = max(1, -(-listed["total"] // VOUCHER_PAGE_SIZE))
    adjustments = await settlement.list_adjustments(conn, tenant, contract_id)
    known = {anchor.id for anchor in contract.anchors}
    # The machine table covers the contract's reporting period, from the first anchor's first day to the last anchor's last day.
    period = (min(a.reporting.first_date for a in contract.anchors), max(a.reporting.last_date for a in contract.anchors))
    machines = sorted({m for a in contract.anchors for m in a.scope})
    availability = await machine_period_totals(conn, tenant, machines, *period)

    # A gap that holds back vouchers of a current anchor is on that anchor's card; the others are listed with the contract's own findings.
    gap_rows, missing = cards.gap_rows, cards.missing
    on_cards = {row["gateway_id"] for row in gap_rows if row["anchor_id"] in known}
    chain_findings = [chain_gap_finding(row, language, missing, tenant) for row in cards.gap_chains if row["gateway_id"] not in on_cards]
    for anchor_id, findings in gap_findings([row for row in gap_rows if row["anchor_id"] not in known], language, missing, tenant).items():
        chain_findings += [replace(f, text=translate(language, "quality.other_anchor", anchor=anchor_id, finding=f.text)) for f in findings]
    # Vouchers of an anchor the current contract revision no longer has are listed with the contract's own findings.
    for group in cards.groups:
        if group.anchor not in known:
            finding = group_finding(group, language, tenant)
            chain_findings.append(replace(finding, text=translate(language, "quality.other_anchor", anchor=group.anchor, finding=finding.text)))
    chain_findings += rejection_findings(await rejection_groups(conn, tenant, contract_id), language)
    # Rejected payloads are listed under the stored vouchers of the first page only.
    rejected = await rejections(conn, tenant, contract_id) if number == 1 else []
    for r in rejected:
        r["reason_text"] = rejection_text(r["code"], language)
        # The table shows what the sender signed, marked as claimed: the cloud verified none of it.
        r["claimed"] = claimed_values(r.pop("payload"))

    packages = await renewal.list_packages(conn, tenant, contract_id)
    for package in packages:
        package["trigger_text"] = trigger_label(package, contract, language)
    runs = await settlement.list_runs(conn, tenant, contract_id) if principal.has(*FINANCE_VIEW) else None
    voucher_list = {"page": number, "pages": pages, "total": listed["total"], "first": listed["offset"] + 1, "last": listed["offset"] + len(listed["items"])}
    return page(
        request, "contract.html", contract=contract, total=cards.total, anchors=cards.anchors, machines=availability, machine_period=period,
        vouchers=listed["items"], voucher_list=voucher_list, rejected=rejected,
        chain_findings=chain_findings, adjustments=adjustments, runs=runs, packages=packages, can_adjust=principal.has(*CSM_EDIT),
        can_run=principal.has("finance"), flash=_flash(request, language), modes=MODES, summary=len(contract.anchors) > CHARTED_ANCHORS_MAX,
        anchor_titles={anchor.id: anchor.title.get(language, anchor.id) for anchor in contract.anchors},
    )


@get("/contracts/{contract_id:str}/anchors/{anchor_id:str}", guards=[ANY_ROLE], name="web:anchor")
async def anchor_page(request: Request[Any, Any, Any], conn: Conn, contract_id: FromPath[str], anchor_id: FromPath[str]) -> Response[str]:
    """Show one value anchor's card with its gain chart and downtime Pareto, as the contract page shows it for a contract with few anchors."""
    principal = principal_of(request)
    language = language_of(request)
    cards = await _cards(conn, principal.tenant_id, contract_id, language, only=anchor_id)
    anchor = next(card for card in cards.anchors if card["id"] == anchor_id)
    return page(request, "anchor.html", contract=cards.contract, anchor=anchor, modes=MODES)


def _flash(request: Request[Any, Any, Any], language: str) -> str | None:
    key = request.query_params.get("done")
    return translate(language, key) if key in ("adjustment.saved", "adjustment.withdrawn", "renewal.check", "run.discarded") else None


@get("/contracts/{contract_id:str}/machines/{machine_id:str}", guards=[ANY_ROLE], name="web:machine")
async def machine_page(request: Request[Any, Any, Any], conn: Conn, contract_id: FromPath[str], machine_id: FromPath[str]) -> Response[str]:
    principal = principal_of(request)
    language = language_of(request)
    contract, _ = await settlement.load_contract(conn, principal.tenant_id, contract_id)
    anchors = [a for a in contract.anchors if machine_id in a.scope]
    if not anchors:
        raise NotFound(f"machine {machine_id!r} is not in contract {contract_id!r}")
    first = min(a.baseline.first_date for a in anchors)
    last = max(a.reporting.last_date for a in anchors)
    try:
        report = await reports.machine_report(conn, principal.tenant_id, machine_id, first, last)
    except NotFound:
        # The machine is in the contract's scope but has sent no telemetry yet.
        report = reports.MachineReport([], {}, 0, 0)
    known = {m["id"]: m for m in await reports.list_machines(conn, principal.tenant_id)}
    coded_ms = sum(report.reason_ms.values())
    # A PLC without a reason tag, or a stop whose code is in the tag map's no_reason list, leaves the time without a code.
    downtime = Downtime({code: ms / 60_000 for code, ms in report.reason_ms.items()}, max(report.unplanned_stop_ms - coded_ms, 0) / 60_000,
                        report.planned_busy_ms / 60_000)
    title = translate(language, "machine.title", machine=machine_id)
    machine = known.get(machine_id, {"id": machine_id, "time_source": None, "mapping_hash": None})
    # This page spans the baseline and reporting periods of the machine's anchors, so its empty chart names both.
    labels = pareto_labels(language, title, empty="pareto.empty_machine")
    return page(request, "machine.html", contract=contract, machine=machine, days=report.days, pareto=pareto_chart(pareto_bars(downtime, language), labels=labels))


class AdjustmentForm(msgspec.Struct):
    """The non-routine adjustment form of the contract page."""

    first_date: Filled
    last_date: Filled
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    """At most 500 characters, as in the API: every export of the contract lists the reason."""
    anchor_id: str = ""


@post("/contracts/{contract_id:str}/adjustments", guards=[requires(*CSM_EDIT)], name="web:add-adjustment", status_code=303)
async def add_adjustment(
    request: Request[Any, Any, Any], conn: Conn, contract_id: FromPath[str], data: Annotated[AdjustmentForm, Body(media_type=RequestEncodingType.URL_ENCODED)]
) -> Redirect:
    principal = principal_of(request)
    forbid_unless(principal, *CSM_EDIT)
    await settlement.add_adjustment(
        conn, principal.tenant_id, contract_id, anchor_id=data.anchor_id or None, first_date=parse_date(data.first_date, "first_date"),
        last_date=parse_date(data.last_date, "last_date"), reason=data.reason, actor=principal.actor,
    )
    return Redirect(f"/contracts/{contract_id}?done=adjustment.saved#adjustments", status_code=303)


class WithdrawForm(msgspec.Struct):
    """The withdraw form of an adjustment row: why the adjustment was wrong."""

    withdraw_reason: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


@post("/contracts/{contract_id:str}/adjustments/{adjustment_id:int}/withdraw", guards=[requires(*CSM_EDIT)], name="web:withdraw-adjustment", status_code=303)
async def withdraw_adjustment(
    request: Request[Any, Any, Any], conn: Conn, contract_id: FromPath[str], adjustment_id: FromPath[int],
    data: Annotated[WithdrawForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Redirect:
    principal = principal_of(request)
    forbid_unless(principal, *CSM_EDIT)
    await settlement.withdraw_adjustment(conn, principal.tenant_id, contract_id, adjustment_id, reason=data.withdraw_reason, actor=principal.actor)
    return Redirect(f"/contracts/{contract_id}?done=adjustment.withdrawn#adjustments", status_code=303)
