"""Web pages of contracts: the list, the value report with charts and findings, machine drill-down, adjustments."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from decimal import Decimal
from typing import Annotated, Any

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
from valuegate.cloud.settlement.invoice import split_excluded
from valuegate.cloud.settlement.pricing import PricingError, VoucherValue, latest_per_day, price_anchor
from valuegate.cloud.store import NotFound
from valuegate.edge.methodology import METRICS

from .billing_findings import Finding, chain_gap_finding, claimed_values, gap_findings, rejected_points, rejection_findings
from .charts import UNBILLED, GainPoint, gain_chart, pareto_chart
from .i18n import format_date, translate
from .pages import CSM_EDIT, FINANCE_VIEW, Filled, forbid_unless, language_of, page, parse_date, principal_of
from .queries import (
    Downtime,
    anchor_gains,
    chain_gaps,
    downtime_by_reason,
    gap_vouchers,
    machine_availability,
    rejected_payloads,
    rejection_groups,
    rejections,
    unreproduced_vouchers,
)
from .reasons import date_ranges, no_production_scheduled, parse_reason, reason_text, rejection_text
from .recomputation import CauseGroup, group_text, group_vouchers, voucher_runs
from .renewal_views import trigger_label

__all__ = ("contracts_page", "contract_page", "machine_page", "add_adjustment", "withdraw_adjustment")

ANY_ROLE = requires()
MODES = ("point", "lower_bound")


def _group_finding(group: CauseGroup, language: str, tenant: str) -> Finding:
    return Finding(group_text(group, language, tenant), vouchers=tuple(voucher_runs(group.gateway, group.seqs)), details=tuple(group.details))


def _mean_gains(contract: Any, anchor: Any, values: list[VoucherValue]) -> dict[str, Decimal | None]:
    """Return the anchor's mean gain per counted day from the point estimates and from the lower bounds.

    Priced anchors count days as their price does. Other anchors count sufficient running days, as the renewal progress does.
    """
    mine = [value for value in values if value.anchor == anchor.id]
    means: dict[str, Decimal | None] = {}
    for mode in MODES:
        if anchor.price is not None:
            try:
                means[mode] = price_anchor(contract, anchor.id, mine, mode=mode).mean_gain
            except PricingError:
                means[mode] = None
            continue
        kept, _ = latest_per_day(mine)
        counted = [value.gain(mode) for value in kept if value.sufficient and value.running_day]
        means[mode] = sum(counted, Decimal(0)) / len(counted) if counted else None
    return means


def _chart_labels(language: str, title: str) -> dict[str, str]:
    keys = ("baseline", "target", "interval", "insufficient", "no_data", "day_tip", "day_tip_insufficient", "state_tip", "legend_billable")
    labels = {key: translate(language, f"chart.{key}") for key in keys}
    labels |= {f"legend.{state}": translate(language, f"chart.legend.{state}") for state in UNBILLED}
    return {"title": title, **labels}


def _pareto_labels(language: str, title: str, *, empty: str = "pareto.empty") -> dict[str, str]:
    return {
        "title": title, "minutes": translate(language, "pareto.minutes"), "cumulative": translate(language, "chart.cumulative"),
        "no_data": translate(language, empty), "tip": translate(language, "pareto.tip"),
    }


def _pareto_bars(downtime: Downtime, language: str) -> list[tuple[str, float]]:
    """Return the chart's bars: each reason code, and the stops without a code under a translated label in parentheses."""
    bars = list(downtime.by_reason.items())
    if downtime.unassigned > 0:
        bars.append((translate(language, "pareto.unassigned"), downtime.unassigned))
    return bars


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


async def _anchor_views(conn: Any, tenant: str, contract: Any, states: dict[str, Any], charges: dict[str, Any], language: str,
                        groups: list[CauseGroup], gaps: dict[str, list[Finding]]) -> list[dict[str, Any]]:
    gains = await anchor_gains(conn, tenant, contract.id)
    rejected = rejected_points(await rejected_payloads(conn, tenant, contract.id))
    # The page counts what settlement bills: vouchers a non-routine adjustment takes out are listed as findings, not counted.
    values, excluded = split_excluded(await settlement.billable_values(conn, tenant, contract.id), await settlement.load_exclusions(conn, tenant, contract.id))
    separator = translate(language, "quality.reason_separator")
    today = dt.datetime.now(dt.UTC).date()
    views = []
    for anchor in contract.anchors:
        rows = [g for g in gains if g["anchor_id"] == anchor.id]
        title = anchor.title.get(language, anchor.id)
        state = states.get(anchor.id)
        charge = charges.get(anchor.id)
        downtime = await downtime_by_reason(conn, tenant, anchor.scope, anchor.reporting.first_date, min(anchor.reporting.last_date, today))

        # Findings sit next to the numbers they change: days that bill nothing, disagreements, exclusions.
        # Days with no production scheduled bill nothing too, but are listed apart: nothing is wrong with their data.
        # A chain gap comes first, because no later voucher of the gateway bills until it is filled, whatever its data.
        findings: list[Finding] = list(gaps.get(anchor.id, []))
        no_production: list[dt.date] = []
        for g in rows:
            day = format_date(g["plant_date"], language)
            if not g["sufficient"]:
                day_reasons = [parse_reason(text) for text in g["reasons"] or []]
                if no_production_scheduled(g["planned_busy_min"], day_reasons):
                    no_production.append(g["plant_date"])
                    continue
                why = separator.join(reason_text(reason, language) for reason in day_reasons) or "–"
                findings.append(Finding(translate(language, "quality.insufficient_day", date=day, reasons=why), "; ".join(g["reasons"] or [])))
            elif not g["running_day"] and anchor.price is not None and anchor.price.per != "avoided_minute":
                findings.append(Finding(translate(language, "quality.not_running_day", date=day)))
        findings += [_group_finding(group, language, tenant) for group in groups if group.anchor == anchor.id]
        findings += [Finding(translate(language, "quality.excluded", voucher=value.voucher_id, id=exclusion.id))
                     for value, exclusion in excluded if value.anchor == anchor.id]
        # The chart leaves out days with no production scheduled: they have no gain to show.
        # It draws the vouchers that bill nothing whatever their data (gap, disagreement, exclusion, rejection) apart.
        excluded_ids = {value.voucher_id for value, _ in excluded if value.anchor == anchor.id}
        points = [
            GainPoint(g["plant_date"], float(g["delta_point"]), float(g["delta_low"]), float(g["delta_high"]), g["sufficient"],
                      state="excluded" if g["state"] == "billable" and g["voucher_id"] in excluded_ids else g["state"])
            for g in rows
            if g["plant_date"] not in no_production
        ]
        points += rejected.get(anchor.id, [])

        views.append(
            {
                "id": anchor.id,
                "title": title,
                "metric": anchor.metric,
                "quantity": METRICS[anchor.metric].quantity,
                "unit": METRICS[anchor.metric].unit,
                "scope": anchor.scope,
                "target": anchor.target,
                "mean_gain": state.mean_gain if state else None,
                "means": _mean_gains(contract, anchor, values),
                "target_met": state.target_met if state and state.target is not None and state.mean_gain is not None else None,
                "days": charge.days if charge else sum(1 for g in rows if g["sufficient"] and g["running_day"]),
                "amount": charge.amount if charge else None,
                "price": anchor.price,
                "cap": anchor.cap,
                "floor": anchor.floor,
                "baseline_first": anchor.baseline.first_date,
                "baseline_last": anchor.baseline.last_date,
                "baseline_value": rows[-1]["baseline_value"] if rows else None,
                "reporting_first": anchor.reporting.first_date,
                "reporting_last": anchor.reporting.last_date,
                "chart": gain_chart(points, target=anchor.target, labels=_chart_labels(language, translate(language, "chart.titled", anchor=title, chart=translate(language, "anchor.chart_title"))),
                                    format_day=lambda day: format_date(day, language)),
                "pareto": pareto_chart(_pareto_bars(downtime, language), labels=_pareto_labels(language, translate(language, "chart.titled", anchor=title, chart=translate(language, "pareto.heading")))),
                "findings": findings,
                "no_production": len(no_production),
                "no_production_dates": date_ranges(no_production, language),
            }
        )
    return views


@get("/contracts/{contract_id:str}", guards=[ANY_ROLE], name="web:contract")
async def contract_page(request: Request[Any, Any, Any], conn: Conn, contract_id: FromPath[str]) -> Response[str]:
    principal = principal_of(request)
    tenant = principal.tenant_id
    language = language_of(request)
    contract, states, charges, total = await renewal.progress(conn, tenant, contract_id)

    vouchers = (await reports.contract_vouchers(conn, tenant, contract_id, limit=500))["items"]
    adjustments = await settlement.list_adjustments(conn, tenant, contract_id)
    groups = group_vouchers(await unreproduced_vouchers(conn, tenant, contract_id))
    known = {anchor.id for anchor in contract.anchors}
    gap_rows = await gap_vouchers(conn, tenant, contract_id)
    gap_chains = await chain_gaps(conn, tenant, contract_id)
    missing = await missing_runs(conn, tenant, [row["gateway_id"] for row in gap_rows + gap_chains])
    anchors = await _anchor_views(conn, tenant, contract, states, charges, language, groups, gap_findings(gap_rows, language, missing, tenant))
    machines = sorted({m for a in contract.anchors for m in a.scope})
    first = min(a.reporting.first_date for a in contract.anchors)
    availability = await machine_availability(conn, tenant, machines, first, dt.datetime.now(dt.UTC).date())

    # A gap that holds back vouchers of a current anchor is on that anchor's card; the others are listed with the contract's own findings.
    on_cards = {row["gateway_id"] for row in gap_rows if row["anchor_id"] in known}
    chain_findings = [chain_gap_finding(row, language, missing, tenant) for row in gap_chains if row["gateway_id"] not in on_cards]
    for anchor_id, findings in gap_findings([row for row in gap_rows if row["anchor_id"] not in known], language, missing, tenant).items():
        chain_findings += [replace(f, text=translate(language, "quality.other_anchor", anchor=anchor_id, finding=f.text)) for f in findings]
    # Vouchers of an anchor the current contract revision no longer has are listed with the contract's own findings.
    for group in groups:
        if group.anchor not in known:
            finding = _group_finding(group, language, tenant)
            chain_findings.append(replace(finding, text=translate(language, "quality.other_anchor", anchor=group.anchor, finding=finding.text)))
    chain_findings += rejection_findings(await rejection_groups(conn, tenant, contract_id), language)
    rejected = await rejections(conn, tenant, contract_id)
    for r in rejected:
        r["reason_text"] = rejection_text(r["code"], language)
        # The table shows what the sender signed, marked as claimed: the cloud verified none of it.
        r["claimed"] = claimed_values(r.pop("payload"))

    packages = await renewal.list_packages(conn, tenant, contract_id)
    for package in packages:
        package["trigger_text"] = trigger_label(package, contract, language)
    runs = await settlement.list_runs(conn, tenant, contract_id) if principal.has(*FINANCE_VIEW) else None
    return page(
        request, "contract.html", contract=contract, total=total, anchors=anchors, machines=availability, vouchers=vouchers, rejected=rejected,
        chain_findings=chain_findings, adjustments=adjustments, runs=runs, packages=packages, can_adjust=principal.has(*CSM_EDIT),
        can_run=principal.has("finance"), flash=_flash(request, language), modes=MODES,
        anchor_titles={anchor.id: anchor.title.get(language, anchor.id) for anchor in contract.anchors},
    )


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
        days = await reports.machine_kpis(conn, principal.tenant_id, machine_id, first, last)
    except NotFound:
        # The machine is in the contract's scope but has sent no telemetry yet.
        days = []
    known = {m["id"]: m for m in await reports.list_machines(conn, principal.tenant_id)}
    downtime = await downtime_by_reason(conn, principal.tenant_id, [machine_id], first, last)
    title = translate(language, "machine.title", machine=machine_id)
    machine = known.get(machine_id, {"id": machine_id, "time_source": None, "mapping_hash": None})
    # This page spans the baseline and reporting periods of the machine's anchors, so its empty chart names both.
    labels = _pareto_labels(language, title, empty="pareto.empty_machine")
    return page(request, "machine.html", contract=contract, machine=machine, days=days, pareto=pareto_chart(_pareto_bars(downtime, language), labels=labels))


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
