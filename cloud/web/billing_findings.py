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
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from valuegate.cloud.settlement.gaps import MissingRun

from .charts import GainPoint
from .i18n import translate
from .reasons import rejection_text
from .recomputation import DETAILS_KEPT, RUNS_IN_LINE, voucher_runs

__all__ = ("Finding", "GAP_CAUSES", "collapse_instants", "rejection_findings", "gap_findings", "chain_gap_finding", "claimed_values", "rejected_points")

# Rejection codes of a gap's first missing voucher with an action of their own on the gap's line; other codes get their reason.
GAP_CAUSES = ("key_not_valid", "key_revoked", "key_unknown")


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
    detail_repeats: tuple[int, ...] = ()
    """Per raw detail, how many more details differ from it only in their timestamps; empty when none were collapsed."""


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


# An ISO 8601 instant as the ingest checks write it into a reason, such as 2024-05-27T08:00:00+00:00.
_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?")


def collapse_instants(reasons: Iterable[str]) -> list[tuple[str, int]]:
    """Return the first of each set of reasons that differ only in their timestamps, with how many more the set holds.

    A gateway resends a voucher with the same fault, so its reasons often differ only in the issue time.
    """
    sets: dict[str, list[str]] = {}
    for reason in reasons:
        sets.setdefault(_INSTANT.sub("TIME", reason), []).append(reason)
    return [(same[0], len(same) - 1) for same in sets.values()]


def rejection_findings(groups: Iterable[Mapping[str, Any]], language: str) -> list[Finding]:
    """Render one finding per gateway and rejection code from :func:`~valuegate.cloud.web.queries.rejection_groups`.

    The line gives the localized reason, and the latest English reason follows in small print. The details
    toggle lists every voucher id and up to :data:`~valuegate.cloud.web.recomputation.DETAILS_KEPT` distinct reasons,
    with reasons that differ only in their timestamps shown once.
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
        details = collapse_instants(group["reasons"])[:DETAILS_KEPT]
        findings.append(
            Finding(
                text, note=f"{group['code']}: {group['latest_reason']}", vouchers=tuple(runs), details=tuple(reason for reason, _ in details),
                toggle="quality.rejected_details", raw_heading="quality.rejected_raw", detail_repeats=tuple(more for _, more in details),
            )
        )
    return findings


def _missing_text(run: MissingRun | None, after: int, language: str) -> str:
    if run is None:
        return translate(language, "gap.missing_from", first=after + 1)
    return translate(language, "gap.missing_one" if run.first == run.last else "gap.missing_range", first=run.first, last=run.last)


def _gap_action(run: MissingRun | None, tenant: str, language: str) -> tuple[str, str]:
    """Return what to do about a gap, for the rejection of its first missing voucher, and that rejection's English reason for the note."""
    if run is None or run.first_code is None:
        return translate(language, "quality.gap_action"), ""
    note = f"{run.first_code}: {run.first_reason}"
    if run.first_code in GAP_CAUSES:
        return translate(language, f"quality.gap_cause.{run.first_code}", voucher=run.first_voucher, tenant=tenant, gateway=run.gateway), note
    reason = rejection_text(run.first_code, language)
    return translate(language, "quality.gap_cause.other", voucher=run.first_voucher, reason=reason), note


def gap_findings(rows: Iterable[Mapping[str, Any]], language: str, missing: Mapping[str, MissingRun], tenant: str) -> dict[str, list[Finding]]:
    """Return per anchor id a finding for each gateway whose chain gap holds back some of the anchor's vouchers.

    ``rows`` come from :func:`~valuegate.cloud.web.queries.gap_vouchers` and ``missing`` from
    :func:`~valuegate.cloud.settlement.gaps.missing_runs`. The line names the missing sequences
    and, when a rejection of the first one is stored, its cause and what to do about it.
    """
    found: dict[str, list[Finding]] = {}
    for row in rows:
        count = int(row["vouchers"])
        run = missing.get(row["gateway_id"])
        action, note = _gap_action(run, tenant, language)
        key = "quality.gap_anchor_one" if count == 1 else "quality.gap_anchor"
        text = translate(language, key, count=count, gateway=row["gateway_id"], missing=_missing_text(run, row["contiguous_through"], language),
                         highest=row["highest_seq"], action=action)
        found.setdefault(row["anchor_id"], []).append(Finding(text, note=note))
    return found


def chain_gap_finding(row: Mapping[str, Any], language: str, missing: Mapping[str, MissingRun], tenant: str) -> Finding:
    """Render a gateway's chain gap that no anchor card shows, from a row of :func:`~valuegate.cloud.web.queries.chain_gaps`."""
    run = missing.get(row["gateway_id"])
    action, note = _gap_action(run, tenant, language)
    text = translate(language, "quality.chain_gap", gateway=row["gateway_id"], missing=_missing_text(run, row["contiguous_through"], language),
                     highest=row["highest_seq"], action=action)
    return Finding(text, note=note)


def _finite(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"not a finite number: {value!r}")
    return float(value)


def claimed_values(payload: bytes | None) -> dict[str, Any] | None:
    """Return what a rejected voucher's payload claims: plant date, anchor, gain and interval, sufficiency; None when it does not parse.

    The numbers are the sender's and unverified. A rejection carries a contract only when a key of its gateway
    signed the claims (``valuegate.cloud.chain.rejection_hints``). The voucher table shows other rejections' claims too, marked as claimed.
    """
    if payload is None:
        return None
    try:
        subject = msgspec.json.decode(bytes(payload))["credentialSubject"]
        delta = subject["delta"]
        claimed = {
            "plant_date": dt.date.fromisoformat(subject["period"]["plant_date"]), "anchor": subject["anchor"],
            "point": _finite(delta["point"]), "low": _finite(delta["low"]), "high": _finite(delta["high"]), "sufficient": subject["sufficiency"]["ok"] is True,
        }  # fmt: skip
    except (msgspec.DecodeError, KeyError, TypeError, ValueError):
        return None
    return claimed if isinstance(claimed["anchor"], str) else None


def rejected_points(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[GainPoint]]:
    """Return per anchor id the gain chart points of rejected vouchers, read from their stored payloads.

    The rows are the contract's rejections, so a key of the gateway signed these numbers.
    A payload that does not hold the fields the chart needs is left out.
    """
    points: dict[str, list[GainPoint]] = {}
    for row in rows:
        claimed = claimed_values(row["payload"])
        if claimed is not None:
            point = GainPoint(claimed["plant_date"], claimed["point"], claimed["low"], claimed["high"], claimed["sufficient"], state="rejected")
            points.setdefault(claimed["anchor"], []).append(point)
    return points
