"""Insufficient-day reasons of the vouchers in the page language, and which days simply had no production scheduled.

A voucher's ``sufficiency.reasons`` are English sentences written by the
edge methodology (``valuegate.edge.methodology.day_sufficiency`` and the KPI
kernel's explanations). The signed text cannot change, so the web layer
recognizes each known sentence, turns it into a reason code with its
values and renders that from the catalog. A sentence it does not recognize
is shown as it is.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .i18n import catalog, format_date, translate

__all__ = ("Reason", "parse_reason", "reason_text", "rejection_text", "no_production_scheduled", "date_ranges")


@dataclass(frozen=True, slots=True)
class Reason:
    """One recognized reason: its code, its values, and the original sentence."""

    code: str
    text: str
    values: dict[str, str] = field(default_factory=dict)


_BELOW_MINIMUM = re.compile(r"planned busy time (?P<planned>[0-9.]+) min is below the minimum of (?P<minimum>[0-9.]+) min")
_OFFLINE_SHARE = re.compile(r"no data for (?P<share>[0-9.]+%) of planned busy and offline time, above the maximum of (?P<maximum>[0-9.]+%)")
_METRIC_UNDEFINED = re.compile(r"(?P<metric>[a-z_]+) is undefined: (?P<why>.+)")

# The KPI kernel's explanations that a metric gap can carry: availability's (also the default) and OEE's.
_WHY_PLANNED_BUSY_ZERO = "planned busy time is zero: no running, idle, unplanned stop or changeover time in the window"
_WHY_PARTS = re.compile(r"undefined because (?P<parts>[a-z ]+?) (?:is|are) undefined")
_PARTS = ("availability", "effectiveness", "quality")


def parse_reason(text: str) -> Reason:
    """Return the reason code and values of one methodology sentence; code ``other`` when the sentence is not known."""
    if match := _BELOW_MINIMUM.fullmatch(text):
        return Reason("planned_busy_below_minimum", text, match.groupdict())
    if match := _OFFLINE_SHARE.fullmatch(text):
        return Reason("offline_share_above_maximum", text, match.groupdict())
    if match := _METRIC_UNDEFINED.fullmatch(text):
        why = match["why"]
        if why == _WHY_PLANNED_BUSY_ZERO:
            return Reason("metric_undefined", text, {"metric": match["metric"], "why": "planned_busy_zero"})
        if (found := _WHY_PARTS.fullmatch(why)) and all(part in _PARTS for part in found["parts"].split(" and ")):
            return Reason("metric_undefined", text, {"metric": match["metric"], "why": "parts_undefined", "parts": found["parts"]})
    return Reason("other", text)


def reason_text(reason: Reason, language: str) -> str:
    """Render a reason in ``language``; an unknown one keeps its original text."""
    values = reason.values
    if reason.code in ("planned_busy_below_minimum", "offline_share_above_maximum"):
        return translate(language, f"reason.{reason.code}", **values)
    if reason.code != "metric_undefined":
        return reason.text
    key = f"metric.{values['metric']}"
    metric = translate(language, key)
    if metric == key:
        metric = values["metric"]
    if values["why"] == "parts_undefined":
        names = [translate(language, f"reason.part.{part}") for part in values["parts"].split(" and ")]
        listed = names[0] if len(names) == 1 else translate(language, "reason.list_comma").join(names[:-1]) + translate(language, "reason.list_and") + names[-1]
        explanation = translate(language, "reason.why.parts_undefined", parts=listed)
    else:
        explanation = translate(language, "reason.why.planned_busy_zero")
    return translate(language, "reason.metric_undefined", metric=metric, why=explanation)


def no_production_scheduled(planned_busy_min: float | None, reasons: Sequence[Reason]) -> bool:
    """Return whether an insufficient day had no production scheduled at all, rather than a data problem.

    That is a day with zero planned busy time whose reasons all follow from it:
    a missing-data share above the maximum or an unknown reason keeps it a data-quality finding.
    """
    if planned_busy_min is None or planned_busy_min > 0:
        return False
    return all(reason.code in ("planned_busy_below_minimum", "metric_undefined") for reason in reasons)


def date_ranges(days: Iterable[dt.date], language: str) -> list[str]:
    """Group dates into runs of consecutive days, each rendered as one date or ``first – last``."""
    runs: list[list[dt.date]] = []
    for day in sorted(set(days)):
        if runs and day - runs[-1][-1] == dt.timedelta(days=1):
            runs[-1].append(day)
        else:
            runs.append([day])
    return [format_date(run[0], language) if len(run) == 1 else f"{format_date(run[0], language)} – {format_date(run[-1], language)}" for run in runs]


def rejection_text(code: str, language: str) -> str:
    """Return why the cloud rejected a voucher, from its rejection code, in ``language``; an unknown code is named in a general text."""
    key = f"rejection.{code}"
    if key in catalog(language):
        return translate(language, key)
    return translate(language, "rejection.other", code=code)
