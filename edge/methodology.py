"""Value methodology: daily metrics, data sufficiency, baselines and the bootstrap interval of each day's delta.

The structure follows IPMVP (value = baseline counterfactual - reporting
period, on a metric normalized per planned busy hour) with CalTRACK-style
sufficiency gates: a baseline needs a minimum number of covered days, a day
without enough data claims nothing, and nothing is annualized. The edge
issues vouchers with these functions and the cloud recomputes them from the
stored records, so every result depends only on the KPIs, the anchor and the
dates, and every float that enters a voucher is rounded in :func:`rounded`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from valuegate.edge.kernels import Kpis, block_bootstrap, percentile_interval
from valuegate.edge.protocol import contract, voucher
from valuegate.edge.protocol.canonical import content_digest

__all__ = (
    "DECIMALS",
    "METHOD",
    "BASELINE_SCHEMA",
    "MetricInfo",
    "METRICS",
    "InsufficientBaseline",
    "BaselineResult",
    "rounded",
    "metric_claim",
    "day_metric",
    "day_sufficiency",
    "covered_minutes",
    "baseline_digest",
    "build_baseline",
    "value_for_day",
    "billable_quantity",
)

# Every float placed in a voucher is rounded to this many decimals, here only.
DECIMALS = 6
METHOD = "moving_block_bootstrap_percentile/xorshift64/v1"
BASELINE_SCHEMA = "valuegate/baseline/v1"


@dataclass(frozen=True)
class MetricInfo:
    """Description of an anchor metric: its unit, the better direction and the delta quantity it bills."""

    unit: str
    better: Literal["higher", "lower"]
    quantity: Literal["oee_points", "availability_points", "avoided_downtime_min"]


METRICS: dict[str, MetricInfo] = {
    "oee_points": MetricInfo("percentage_points", "higher", "oee_points"),
    "availability_points": MetricInfo("percentage_points", "higher", "availability_points"),
    "unplanned_downtime_rate": MetricInfo("min_per_planned_busy_hour", "lower", "avoided_downtime_min"),
}


class InsufficientBaseline(ValueError):
    """The baseline period has fewer covered days than the anchor requires; no value can be claimed yet."""

    def __init__(self, message: str, *, anchor: str, covered: int, required: int, excluded: dict[str, list[str]]) -> None:
        super().__init__(message)
        self.anchor = anchor
        self.covered = covered
        self.required = required
        self.excluded = excluded


def rounded(value: float | None) -> float | None:
    """Round a voucher float to :data:`DECIMALS` places; -0.0 becomes 0.0 so that both signs encode alike."""
    if value is None:
        return None
    if not np.isfinite(value):
        raise ValueError(f"{value!r} cannot enter a voucher; every voucher number must be finite")
    result = round(float(value), DECIMALS)
    return 0.0 if result == 0 else result


def _info(metric: str) -> MetricInfo:
    try:
        return METRICS[metric]
    except KeyError:
        raise ValueError(f"unknown metric {metric!r}; known metrics: {', '.join(METRICS)}") from None


def metric_claim(metric: str) -> voucher.Metric:
    """Return the voucher's description of ``metric``."""
    info = _info(metric)
    return voucher.Metric(name=metric, unit=info.unit, better=info.better)  # type: ignore[arg-type]


def day_metric(metric: str, kpis: Kpis) -> float | None:
    """Return a day's normalized metric, or None when its KPIs leave it undefined.

    ``oee_points`` and ``availability_points`` are the ratio times 100;
    ``unplanned_downtime_rate`` is unplanned downtime minutes per planned busy hour.
    """
    _info(metric)
    if metric == "oee_points":
        return None if kpis.oee is None else kpis.oee * 100
    if metric == "availability_points":
        return None if kpis.availability is None else kpis.availability * 100
    if kpis.planned_busy_min <= 0:
        return None
    return kpis.unplanned_downtime_min / (kpis.planned_busy_min / 60)


def _metric_gap(metric: str, kpis: Kpis) -> str:
    key = {"oee_points": "oee", "availability_points": "availability"}.get(metric, "availability")
    return f"{metric} is undefined: {kpis.why.get(key, 'planned busy time is zero')}"


def covered_minutes(kpis: Kpis) -> float:
    """Return the minutes with data: every state but offline."""
    return kpis.planned_busy_min + kpis.planned_stop_min


def day_sufficiency(kpis: Kpis, rule: contract.Sufficiency, *, metric: str | None = None) -> voucher.Sufficiency:
    """Decide whether a day has enough data to claim value, listing every reason it has not.

    The offline share is offline time over planned busy plus offline time:
    time with no data that could have been planned busy time. With
    ``metric`` the day also fails when that metric is undefined.
    """
    reasons: list[str] = []
    if kpis.planned_busy_min < rule.min_planned_busy_min:
        reasons.append(f"planned busy time {kpis.planned_busy_min:.1f} min is below the minimum of {rule.min_planned_busy_min:g} min")
    exposed = kpis.planned_busy_min + kpis.offline_min
    share = kpis.offline_min / exposed if exposed > 0 else 0.0
    if share > rule.max_offline_share:
        reasons.append(f"no data for {share:.1%} of planned busy and offline time, above the maximum of {rule.max_offline_share:.1%}")
    if metric is not None and day_metric(metric, kpis) is None:
        reasons.append(_metric_gap(metric, kpis))
    return voucher.Sufficiency(ok=not reasons, reasons=reasons, covered_min=rounded(covered_minutes(kpis)))


@dataclass(frozen=True)
class BaselineResult:
    """A measured baseline: the mean metric over covered days, the day table it came from and its digest.

    ``first_date`` and ``last_date`` bound the anchor's baseline period.
    ``daily`` lists each covered day with its rounded metric and ``excluded``
    each day left out with its reasons. ``resampled`` contains the bootstrap
    means of the daily values, which every reporting day's interval uses.
    """

    anchor: str
    metric: str
    value: float
    days: int
    first_date: str
    last_date: str
    digest: str
    daily: tuple[tuple[str, float], ...]
    excluded: dict[str, list[str]] = field(default_factory=dict)
    resampled: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False, compare=False)

    def claim(self) -> voucher.Baseline:
        """Return the baseline as it appears in a voucher."""
        return voucher.Baseline(value=self.value, days=self.days, first_date=self.first_date, last_date=self.last_date, digest=self.digest)


def _parse_date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except (TypeError, ValueError):
        raise ValueError(f"plant date {text!r} is not a date; write YYYY-MM-DD") from None


def baseline_digest(anchor_id: str, metric: str, daily: Sequence[tuple[str, float]]) -> str:
    """Return the content digest (RFC 8785 JSON, SHA-256) of a baseline day table."""
    table = {"schema": BASELINE_SCHEMA, "anchor": anchor_id, "metric": metric, "days": [{"date": day, "value": value} for day, value in daily]}
    return content_digest(table)


def build_baseline(anchor: contract.Anchor, days: list[tuple[str, Kpis]]) -> BaselineResult:
    """Measure the anchor's baseline from plant days' KPIs.

    Days outside the anchor's baseline period are ignored. A day counts as
    covered when it passes the anchor's sufficiency rule and its metric is
    defined. Raises :class:`InsufficientBaseline` with every excluded day and
    its reasons when fewer than ``anchor.baseline.min_days`` days are covered.
    """
    _info(anchor.metric)  # rejects an unknown metric before any day is read
    first, last = anchor.baseline.first_date, anchor.baseline.last_date
    seen: set[str] = set()
    daily: list[tuple[str, float]] = []
    excluded: dict[str, list[str]] = {}
    for plant_date, kpis in sorted(days, key=lambda item: item[0]):
        day = _parse_date(plant_date)
        if plant_date in seen:
            raise ValueError(f"plant date {plant_date} appears twice in the baseline days; pass one KPI set per day")
        seen.add(plant_date)
        if not first <= day <= last:
            continue
        check = day_sufficiency(kpis, anchor.sufficiency, metric=anchor.metric)
        if not check.ok:
            excluded[plant_date] = list(check.reasons)
            continue
        daily.append((plant_date, rounded(day_metric(anchor.metric, kpis))))

    required = anchor.baseline.min_days
    if len(daily) < required:
        shown = "; ".join(f"{day}: {', '.join(reasons)}" for day, reasons in list(excluded.items())[:5])
        more = f" (and {len(excluded) - 5} more)" if len(excluded) > 5 else ""
        msg = (
            f"anchor {anchor.id!r}: the baseline {first}..{last} has {len(daily)} covered days, fewer than the "
            f"{required} the contract requires, so no value can be claimed. "
            + (f"Days without enough data: {shown}{more}. " if excluded else "No data was found for the other days. ")
            + "Collect more baseline days or lower baseline.min_days in the contract."
            + _sufficiency_advice(excluded)
        )
        raise InsufficientBaseline(msg, anchor=anchor.id, covered=len(daily), required=required, excluded=excluded)

    values = np.array([value for _day, value in daily], np.float64)
    settings = anchor.uncertainty
    resampled = block_bootstrap(values, resamples=settings.resamples, block_len=settings.block_days, seed=settings.seed)
    return BaselineResult(
        anchor=anchor.id,
        metric=anchor.metric,
        value=rounded(float(values.sum()) / len(values)),
        days=len(daily),
        first_date=first.isoformat(),
        last_date=last.isoformat(),
        digest=baseline_digest(anchor.id, anchor.metric, daily),
        daily=tuple(daily),
        excluded=excluded,
        resampled=resampled,
    )


def value_for_day(
    anchor: contract.Anchor, baseline: BaselineResult, plant_date: str, kpis: Kpis
) -> tuple[voucher.Reporting, voucher.Delta, voucher.Sufficiency]:
    """Compare one reporting day with the baseline and return the voucher's reporting, delta and sufficiency parts.

    OEE and availability points gained are the day's metric minus the
    baseline. Avoided downtime minutes are (baseline rate - day rate) x the
    day's planned busy hours. The interval applies the same formula to each
    bootstrap mean of the baseline. A day that fails sufficiency claims
    0/0/0 and is not a running day.
    """
    info = _info(anchor.metric)
    if baseline.anchor != anchor.id or baseline.metric != anchor.metric:
        raise ValueError(f"baseline was built for anchor {baseline.anchor!r} ({baseline.metric}), not {anchor.id!r} ({anchor.metric})")
    day = _parse_date(plant_date)
    if not anchor.reporting.first_date <= day <= anchor.reporting.last_date:
        period = f"{anchor.reporting.first_date}..{anchor.reporting.last_date}"
        raise ValueError(f"plant date {plant_date} lies outside the reporting period {period} of anchor {anchor.id!r}")

    sufficiency = day_sufficiency(kpis, anchor.sufficiency, metric=anchor.metric)
    value = day_metric(anchor.metric, kpis)
    reporting = voucher.Reporting(
        value=rounded(value),
        planned_busy_min=rounded(kpis.planned_busy_min),
        run_min=rounded(kpis.run_min),
        unplanned_downtime_min=rounded(kpis.unplanned_downtime_min),
        availability=rounded(kpis.availability),
        effectiveness=rounded(kpis.effectiveness),
        quality=rounded(kpis.quality),
        oee=rounded(kpis.oee),
        running_day=sufficiency.ok,
    )
    settings = anchor.uncertainty
    point = low = high = 0.0
    if sufficiency.ok:
        day_value = rounded(value)
        if info.better == "higher":
            point = day_value - baseline.value
            samples = day_value - baseline.resampled
        else:
            hours = kpis.planned_busy_min / 60
            point = (baseline.value - day_value) * hours
            samples = (baseline.resampled - day_value) * hours
        low, high = percentile_interval(samples, settings.confidence)
    delta = voucher.Delta(
        quantity=info.quantity,
        point=rounded(point),
        low=rounded(low),
        high=rounded(high),
        confidence=settings.confidence,
        method=METHOD,
        resamples=settings.resamples,
        seed=settings.seed,
    )
    return reporting, delta, sufficiency


def billable_quantity(delta: voucher.Delta, settlement: Literal["point", "lower_bound"]) -> float:
    """Return the quantity a contract bills: the point estimate, or the interval's lower bound (conservative)."""
    if settlement == "point":
        return delta.point
    if settlement == "lower_bound":
        return delta.low
    raise ValueError(f"unknown settlement mode {settlement!r}; use 'point' or 'lower_bound'")


def _sufficiency_advice(excluded: dict[str, list[str]]) -> str:
    """Name the contract's sufficiency limits that excluded baseline days, so the advice points at the real cause."""
    reasons = [reason for day_reasons in excluded.values() for reason in day_reasons]
    limits = []
    if any(reason.startswith("no data for ") for reason in reasons):
        limits.append("sufficiency.max_offline_share (the share of time without data a day may have)")
    if any(reason.startswith("planned busy time ") for reason in reasons):
        limits.append("sufficiency.min_planned_busy_min (the planned busy time a day needs)")
    if not limits:
        return ""
    return f" Days were excluded by {' and '.join(limits)}; change it in the contract only if the plant's data is known to look like this."
