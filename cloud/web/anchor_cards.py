"""The value anchor cards of the contract page: figures, findings, the daily gain chart and the downtime Pareto."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from decimal import Decimal
from typing import Any

import markupsafe

from valuegate.cloud.settlement import store as settlement
from valuegate.cloud.settlement.invoice import split_excluded
from valuegate.cloud.settlement.pricing import PricingError, VoucherValue, latest_per_day, price_anchor
from valuegate.edge.methodology import METRICS

from .billing_findings import Finding, rejected_points
from .charts import UNBILLED, GainPoint, gain_chart, pareto_chart
from .i18n import format_date, translate
from .queries import Downtime, Span, anchor_gains, downtime_by_span, rejected_payloads
from .reasons import date_ranges, no_production_scheduled, parse_reason, reason_text
from .recomputation import CauseGroup, group_text, voucher_runs

__all__ = ("MODES", "anchor_views", "group_finding", "pareto_bars", "pareto_labels")

MODES = ("point", "lower_bound")


def group_finding(group: CauseGroup, language: str, tenant: str) -> Finding:
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
        latest, _ = latest_per_day(mine)
        counted = [value.gain(mode) for value in latest if value.sufficient and value.running_day]
        means[mode] = sum(counted, Decimal(0)) / len(counted) if counted else None
    return means


def _chart_labels(language: str, title: str) -> dict[str, str]:
    keys = ("baseline", "target", "interval", "insufficient", "no_data", "day_tip", "day_tip_insufficient", "state_tip", "legend_billable")
    labels = {key: translate(language, f"chart.{key}") for key in keys}
    labels |= {f"legend.{state}": translate(language, f"chart.legend.{state}") for state in UNBILLED}
    return {"title": title, **labels}


def pareto_labels(language: str, title: str, *, empty: str = "pareto.empty") -> dict[str, str]:
    return {
        "title": title, "minutes": translate(language, "pareto.minutes"), "cumulative": translate(language, "chart.cumulative"),
        "no_data": translate(language, empty), "tip": translate(language, "pareto.tip"),
    }


def pareto_bars(downtime: Downtime, language: str) -> list[tuple[str, float]]:
    """Return the chart's bars: each reason code, and the stops without a code under a translated label in parentheses."""
    bars = list(downtime.by_reason.items())
    if downtime.unassigned > 0:
        bars.append((translate(language, "pareto.unassigned"), downtime.unassigned))
    return bars


async def anchor_views(conn: Any, tenant: str, contract: Any, states: dict[str, Any], charges: dict[str, Any], language: str,
                       groups: list[CauseGroup], gaps: dict[str, list[Finding]], *, charted: Collection[str]) -> list[dict[str, Any]]:
    """Build the card of every anchor of ``contract``: its figures, findings and, for the anchors in ``charted``, its two charts.

    The statements run do not depend on the number of anchors: the gains and rejections are read for the whole contract,
    and the downtime of all charted anchors is read by one grouped statement (:func:`downtime_by_span`).
    """
    gains = await anchor_gains(conn, tenant, contract.id)
    rejected = rejected_points(await rejected_payloads(conn, tenant, contract.id))
    # The page counts what settlement bills: vouchers a non-routine adjustment takes out are listed as findings, not counted.
    values, excluded = split_excluded(await settlement.billable_values(conn, tenant, contract.id), await settlement.load_exclusions(conn, tenant, contract.id))
    separator = translate(language, "quality.reason_separator")
    today = dt.datetime.now(dt.UTC).date()
    spans = [Span(a.id, list(a.scope), a.reporting.first_date, min(a.reporting.last_date, today)) for a in contract.anchors if a.id in charted]
    downtimes = await downtime_by_span(conn, tenant, spans)
    gains_of: dict[str, list[dict[str, Any]]] = {}
    for g in gains:
        gains_of.setdefault(g["anchor_id"], []).append(g)
    views = []
    for anchor in contract.anchors:
        rows = gains_of.get(anchor.id, [])
        title = anchor.title.get(language, anchor.id)
        state = states.get(anchor.id)
        charge = charges.get(anchor.id)

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
                reasons = separator.join(reason_text(reason, language) for reason in day_reasons) or "–"
                findings.append(Finding(translate(language, "quality.insufficient_day", date=day, reasons=reasons), "; ".join(g["reasons"] or [])))
            elif not g["running_day"] and anchor.price is not None and anchor.price.per != "avoided_minute":
                findings.append(Finding(translate(language, "quality.not_running_day", date=day)))
        findings += [group_finding(group, language, tenant) for group in groups if group.anchor == anchor.id]
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
                "chart": _gain_chart(anchor, title, points, language) if anchor.id in charted else None,
                "pareto": _pareto_chart(downtimes[anchor.id], title, language) if anchor.id in charted else None,
                "findings": findings,
                "no_production": len(no_production),
                "no_production_dates": date_ranges(no_production, language),
            }
        )
    return views


def _gain_chart(anchor: Any, title: str, points: list[GainPoint], language: str) -> markupsafe.Markup:
    labels = _chart_labels(language, translate(language, "chart.titled", anchor=title, chart=translate(language, "anchor.chart_title")))
    return gain_chart(points, target=anchor.target, labels=labels, format_day=lambda day: format_date(day, language))


def _pareto_chart(downtime: Downtime, title: str, language: str) -> markupsafe.Markup:
    labels = pareto_labels(language, translate(language, "chart.titled", anchor=title, chart=translate(language, "pareto.heading")))
    return pareto_chart(pareto_bars(downtime, language), labels=labels)
