"""Renewal-prep packages: value summary (HTML and PDF, zh-CN and English), talking points, voucher bundle, guide.

This module is pure: :mod:`valuegate.cloud.renewal.service` gathers the
inputs from PostgreSQL. A package is one ZIP file:

- ``summary.zh-CN.html`` / ``summary.en.html`` and their ``.pdf`` renderings,
- ``bundle.zip``: the auditor bundle (vouchers, gateway keys, invoice lines),
- ``GUIDE.zh-CN.md`` / ``GUIDE.en.md``: how to verify the bundle offline,
- ``talking-points.json`` and ``package.json`` (contract, trigger, digests).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from valuegate.cloud.bundle import guide_text
from valuegate.edge.protocol.contract import Contract
from valuegate.cloud.web.charts import GainPoint, gain_chart, pareto_chart
from valuegate.cloud.web.i18n import LANGUAGES, catalog, format_date, format_money, format_number, translate
from valuegate.edge.kernels.kpi import UNASSIGNED
from valuegate.cloud.web.templating import render

from .triggers import Firing

__all__ = ("PACKAGE_SCHEMA", "AnchorSummary", "Reduction", "PackageInputs", "Package", "talking_points", "trigger_text", "build_package")

PACKAGE_SCHEMA = "valuegate/renewal-package/v1"


@dataclass(frozen=True, slots=True)
class AnchorSummary:
    """One anchor's numbers for the summary: promise, realized gain and value, daily gains, downtime by reason."""

    anchor: str
    title: dict[str, str]
    metric: str
    quantity: str
    target: Decimal | None
    mean_gain: Decimal | None
    days: int
    amount: Decimal | None
    gains: Sequence[GainPoint]
    reasons: dict[str, float]


@dataclass(frozen=True, slots=True)
class Reduction:
    """Unplanned downtime of one reason per planned busy hour, baseline period against reporting period."""

    reason: str
    baseline_rate: float
    reporting_rate: float

    @property
    def drop(self) -> float:
        return self.baseline_rate - self.reporting_rate


@dataclass(frozen=True, slots=True)
class PackageInputs:
    """Everything a package is built from."""

    contract: Any
    firing: Firing
    fired_at: dt.datetime
    total: Decimal
    voucher_count: int
    anchors: Sequence[AnchorSummary]
    reductions: Sequence[Reduction]
    machines: Sequence[dict[str, Any]]
    bundle: bytes
    generated_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


@dataclass(frozen=True, slots=True)
class Package:
    """A built package: the ZIP archive, and what the UI shows without opening it."""

    archive: bytes
    summary_html: dict[str, str]
    talking_points: dict[str, list[str]]

    @property
    def sha256(self) -> str:
        return "sha256:" + hashlib.sha256(self.archive).hexdigest()


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def talking_points(inputs: PackageInputs, language: str) -> list[str]:
    """Return talking points drawn from the data: value to date, targets, largest downtime reductions, best and worst machines."""
    contract = inputs.contract
    total = format_money(inputs.total, contract.currency, language, contract.rounding)
    points = [translate(language, "renewal.points.total", amount=total, vouchers=inputs.voucher_count)]
    for anchor in inputs.anchors:
        if anchor.target is not None and anchor.mean_gain is not None:
            key = "renewal.points.target" if anchor.mean_gain >= anchor.target else "renewal.points.target_short"
            points.append(
                translate(
                    language, key, anchor=anchor.title.get(language, anchor.anchor), gain=format_number(anchor.mean_gain, 2),
                    unit=translate(language, f"quantity.{anchor.quantity}"), target=format_number(anchor.target),
                    estimate=translate(language, f"mode.{contract.settlement}"),
                )
            )
    points += _reduction_points(inputs.reductions, language)
    points += _machine_points(inputs.machines, language)
    return points


def reason_label(code: str, language: str) -> str:
    """Return how a downtime reason code reads in ``language``: its catalog label, ``reason 103`` for a numeric PLC code, else the code itself.

    The cloud stores only the codes. A rule's fixed code (``FEED_HOLD``) is already a name, while a number from a reason tag is not.
    """
    key = f"downtime_reason.{code}"
    if key in catalog(language):
        return translate(language, key)
    if code == UNASSIGNED:
        return translate(language, "renewal.reason.unassigned")
    if code.isdigit():
        return translate(language, "renewal.reason.code", code=code)
    return code


def _reduction_points(reductions: Sequence[Reduction], language: str) -> list[str]:
    """Return a point on the largest downtime reduction and one listing the next two, largest first (ties by code)."""
    largest = sorted((r for r in reductions if r.drop > 0), key=lambda r: (-r.drop, r.reason))[:3]
    if not largest:
        return []

    def values(reduction: Reduction) -> dict[str, str]:
        return {"reason": reason_label(reduction.reason, language), "before": f"{reduction.baseline_rate:.2f}", "after": f"{reduction.reporting_rate:.2f}"}

    points = [translate(language, "renewal.points.reduction", **values(largest[0]))]
    rest = [translate(language, "renewal.points.reduction_item", **values(r)) for r in largest[1:]]
    if rest:
        key = "renewal.points.reduction_next_one" if len(rest) == 1 else "renewal.points.reduction_next"
        points.append(translate(language, key, items=translate(language, "renewal.points.reduction_separator").join(rest)))
    return points


def _machine_points(machines: Sequence[dict[str, Any]], language: str) -> list[str]:
    """Return the points about machines: the best and the worst by availability, but only where they differ as printed.

    One machine is neither best nor worst, and machines at the same printed availability have no best.
    """
    ranked = sorted((m for m in machines if m.get("availability") is not None), key=lambda m: (-m["availability"], m["machine"]))
    if not ranked:
        return []
    best, worst = ranked[0], ranked[-1]
    if len(ranked) == 1:
        return [translate(language, "renewal.points.one_machine", machine=best["machine"], availability=_percent(best["availability"]))]
    if _percent(best["availability"]) == _percent(worst["availability"]):
        return [translate(language, "renewal.points.machines_equal", count=len(ranked), availability=_percent(best["availability"]))]
    return [
        translate(language, "renewal.points.best_machine", machine=best["machine"], availability=_percent(best["availability"])),
        translate(language, "renewal.points.worst_machine", machine=worst["machine"], availability=_percent(worst["availability"])),
    ]


def trigger_text(firing: Firing, language: str, contract: Contract) -> str:
    """Describe a trigger firing in ``language``, naming a value anchor by its title instead of its id."""
    detail = dict(firing.detail)
    if firing.kind == "value_over":
        detail["amount"] = format_money(Decimal(detail["amount"]), contract.currency, language, contract.rounding)
    anchor = next((a for a in contract.anchors if a.id == detail.get("anchor")), None)
    if anchor is not None:
        detail["anchor"] = anchor.title.get(language, anchor.id)
    return translate(language, f"renewal.trigger.{firing.kind}", **detail)


def summary_html(inputs: PackageInputs, language: str, points: list[str]) -> str:
    """Render the value summary page of a package in ``language``."""
    anchors = []
    for anchor in inputs.anchors:
        title = anchor.title.get(language, anchor.anchor)
        chart_labels = {key: translate(language, f"chart.{key}") for key in ("baseline", "target", "interval", "insufficient", "no_data", "day_tip", "day_tip_insufficient")}
        pareto_labels = {
            "minutes": translate(language, "pareto.minutes"), "cumulative": translate(language, "chart.cumulative"), "no_data": translate(language, "pareto.empty"),
            "tip": translate(language, "pareto.tip"),
        }
        anchors.append(
            {
                "title": title,
                "metric": anchor.metric,
                "target": anchor.target,
                "mean_gain": anchor.mean_gain,
                "days": anchor.days,
                "amount": anchor.amount,
                "chart": gain_chart(anchor.gains, target=float(anchor.target) if anchor.target is not None else None,
                                    labels={"title": f"{title} – {translate(language, 'anchor.chart_title')}", **chart_labels},
                                    format_day=lambda day: format_date(day, language)),
                "pareto": pareto_chart([(reason_label(code, language), minutes) for code, minutes in anchor.reasons.items()], labels={"title": f"{title} – {translate(language, 'pareto.heading')}", **pareto_labels}),
            }
        )
    return render(
        "renewal/summary.html", language, contract=inputs.contract, value={"total": inputs.total}, anchors=anchors, machines=inputs.machines,
        talking_points=points, trigger_text=trigger_text(inputs.firing, language, inputs.contract), fired_at=inputs.fired_at,
        generated_at=inputs.generated_at,
    )


def build_package(inputs: PackageInputs, *, pdf: bool = True) -> Package:
    """Build the package archive; ``pdf=False`` leaves out the PDF renderings (for quick previews)."""
    from weasyprint import HTML

    files: dict[str, bytes] = {}
    summaries: dict[str, str] = {}
    points: dict[str, list[str]] = {}
    for language in LANGUAGES:
        points[language] = talking_points(inputs, language)
        summaries[language] = summary_html(inputs, language, points[language])
        files[f"summary.{language}.html"] = summaries[language].encode("utf-8")
        if pdf:
            files[f"summary.{language}.pdf"] = HTML(string=summaries[language]).write_pdf()
        files[f"GUIDE.{language}.md"] = guide_text(language).encode("utf-8")
    files["bundle.zip"] = inputs.bundle
    files["talking-points.json"] = json.dumps(points, ensure_ascii=False, indent=2).encode("utf-8")
    files["package.json"] = json.dumps(
        {
            "schema": PACKAGE_SCHEMA,
            "tenant": inputs.contract.tenant,
            "contract": inputs.contract.id,
            "trigger": {"key": inputs.firing.key, "kind": inputs.firing.kind, "detail": inputs.firing.detail},
            "fired_at": inputs.fired_at.isoformat(),
            "realized_total": str(inputs.total),
            "currency": inputs.contract.currency,
            "bundle_sha256": "sha256:" + hashlib.sha256(inputs.bundle).hexdigest(),
        },
        ensure_ascii=False,
        indent=2,
    ).encode("utf-8")

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in sorted(files.items()):
            archive.writestr(zipfile.ZipInfo(name, date_time=(2000, 1, 1, 0, 0, 0)), data, compress_type=zipfile.ZIP_DEFLATED)
    return Package(buffer.getvalue(), summaries, points)
