"""Contract-page findings of vouchers that bill nothing for a reason outside their data: rejections and chain gaps.

A gateway resends a rejected voucher until the cloud stores it, and one
voucher can have several rejection rows (one per payload and code). The
page groups them into one line per gateway and rejection code, with the
voucher ids as runs, and puts a chain gap on the card of each anchor whose
vouchers wait behind it. The claims of rejected vouchers also give the
gain chart its rejected days.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from .charts import GainPoint
from .i18n import translate
from .reasons import rejection_text
from .recomputation import DETAILS_KEPT, RUNS_IN_LINE, voucher_runs

__all__ = ("Finding", "rejection_findings", "gap_findings", "chain_gap_finding", "rejected_points")


@dataclass(frozen=True, slots=True)
class Finding:
    """A data-quality finding in the page language; ``source`` is the original English text, shown as a tooltip."""

    text: str
    source: str = ""
    vouchers: tuple[str, ...] = ()
    """For a group of vouchers: every voucher id or run of ids, listed in the finding's details toggle."""
    details: tuple[str, ...] = ()
    """For a group of vouchers: their distinct raw details (English), for engineers."""
    note: str = ""
    """The original English detail, shown in small print after the text."""
    toggle: str = "quality.details"
    """Catalog key of the details toggle's summary."""
    raw_heading: str = "quality.raw_details"
    """Catalog key of the heading above the raw details."""


def _id_runs(gateway: str, voucher_ids: Iterable[str]) -> list[str]:
    """Return the ids as runs of consecutive sequences; an id that does not read as ``gateway:seq`` is kept as it is."""
    seqs: list[int] = []
    others: list[str] = []
    for vid in voucher_ids:
        prefix, _, seq = vid.rpartition(":")
        if prefix == gateway and seq.isdigit():
            seqs.append(int(seq))
        else:
            others.append(vid)
    return voucher_runs(gateway, seqs) + sorted(others)


def rejection_findings(groups: Iterable[Mapping[str, Any]], language: str) -> list[Finding]:
    """Render one finding per gateway and rejection code from :func:`~valuegate.cloud.web.queries.rejection_groups`.

    The line gives the localized reason, and the latest English reason follows in small print. The details
    toggle lists every voucher id and up to :data:`~valuegate.cloud.web.recomputation.DETAILS_KEPT` distinct reasons.
    """
    comma = translate(language, "reason.list_comma")
    findings = []
    for group in groups:
        gateway = group["gateway_id"]
        runs = _id_runs(gateway, group["voucher_ids"])
        unnamed = int(group["unnamed"])
        count = len(group["voucher_ids"]) + unnamed
        listed = runs[:RUNS_IN_LINE]
        if unnamed:
            listed.append(translate(language, "quality.unnamed", count=unnamed))
        vouchers = comma.join(listed) + ("…" if len(runs) > RUNS_IN_LINE else "")
        key = "quality.rejected_group_one" if count == 1 and not unnamed else "quality.rejected_group"
        text = translate(language, key, gateway=gateway, count=count, vouchers=vouchers, reason=rejection_text(group["code"], language))
        findings.append(
            Finding(
                text, note=f"{group['code']}: {group['latest_reason']}", vouchers=tuple(runs),
                details=tuple(group["reasons"][:DETAILS_KEPT]), toggle="quality.rejected_details", raw_heading="quality.rejected_raw",
            )
        )
    return findings


def gap_findings(rows: Iterable[Mapping[str, Any]], language: str) -> dict[str, list[Finding]]:
    """Return per anchor id a finding for each gateway whose chain gap holds back some of the anchor's vouchers.

    ``rows`` come from :func:`~valuegate.cloud.web.queries.gap_vouchers`.
    """
    found: dict[str, list[Finding]] = {}
    for row in rows:
        count = int(row["vouchers"])
        key = "quality.gap_anchor_one" if count == 1 else "quality.gap_anchor"
        text = translate(language, key, count=count, gateway=row["gateway_id"], after=row["contiguous_through"], highest=row["highest_seq"],
                         action=translate(language, "quality.gap_action"))
        found.setdefault(row["anchor_id"], []).append(Finding(text))
    return found


def chain_gap_finding(row: Mapping[str, Any], language: str) -> Finding:
    """Render a gateway's chain gap that no anchor card shows, from a row of :func:`~valuegate.cloud.web.queries.chain_gaps`."""
    return Finding(translate(language, "quality.chain_gap", gateway=row["gateway_id"], after=row["contiguous_through"], highest=row["highest_seq"],
                             action=translate(language, "quality.gap_action")))


def _finite(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"not a finite number: {value!r}")
    return float(value)


def rejected_points(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[GainPoint]]:
    """Return per anchor id the gain chart points of rejected vouchers, read from their stored payloads.

    A rejection carries a contract only when a key of its gateway signed the claims
    (``valuegate.cloud.chain.rejection_hints``), so these numbers are the gateway's own.
    A payload that does not hold the fields the chart needs is left out.
    """
    points: dict[str, list[GainPoint]] = {}
    for row in rows:
        try:
            subject = msgspec.json.decode(bytes(row["payload"]))["credentialSubject"]
            delta = subject["delta"]
            point = GainPoint(
                dt.date.fromisoformat(subject["period"]["plant_date"]), _finite(delta["point"]), _finite(delta["low"]), _finite(delta["high"]),
                subject["sufficiency"]["ok"] is True, state="rejected",
            )
            anchor = subject["anchor"]
        except (msgspec.DecodeError, KeyError, TypeError, ValueError):
            continue
        if isinstance(anchor, str):
            points.setdefault(anchor, []).append(point)
    return points
