"""Value methodology: daily metrics, sufficiency gates, baselines and each day's delta with its interval."""

from __future__ import annotations

import datetime as dt

import pytest

from valuegate.edge.kernels import kpis, totals_from_columns
from valuegate.edge.methodology import (
    DECIMALS,
    InsufficientBaseline,
    billable_quantity,
    build_baseline,
    day_metric,
    day_sufficiency,
    metric_claim,
    rounded,
    value_for_day,
)
from valuegate.edge.protocol import contract

MIN = 60_000


def _anchor(metric: str = "oee_points", min_days: int = 3, **extra) -> contract.Anchor:
    return contract.Anchor(
        id="line-1-oee",
        scope=["press-1"],
        metric=metric,
        baseline=contract.BaselineSpec(first_date=dt.date(2024, 1, 1), last_date=dt.date(2024, 1, 10), min_days=min_days),
        reporting=contract.PeriodSpec(first_date=dt.date(2024, 2, 1), last_date=dt.date(2024, 2, 29)),
        uncertainty=contract.Uncertainty(resamples=500, block_days=2, seed=99, confidence=0.95),
        **extra,
    )


def _day(run_min: float, unplanned_min: float = 0, offline_min: float = 0, produced: int | None = None, cycle_s: float = 30.0):
    """KPIs of an 8-hour planned day: ``run_min`` running, ``unplanned_min`` down, the rest idle."""
    idle = 480 - run_min - unplanned_min
    if produced is None:
        produced = int(run_min * 60 / cycle_s)
    totals = totals_from_columns(
        [int(run_min * MIN), int(idle * MIN), 0, int(unplanned_min * MIN), 0, int(offline_min * MIN)],
        produced=produced,
        stops=1 if unplanned_min else 0,
        ideal_cycle_time_s=cycle_s,
    )
    return kpis(totals)


def test_day_metrics():
    day = _day(run_min=240, unplanned_min=48)
    assert day_metric("availability_points", day) == 50.0
    assert day_metric("oee_points", day) == 50.0  # effectiveness and quality are 1
    assert day_metric("unplanned_downtime_rate", day) == 6.0  # 48 min over 8 planned hours


def test_day_metric_undefined_without_planned_time():
    empty = kpis(totals_from_columns([0, 0, 0, 0, 0, 0]))
    for metric in ("oee_points", "availability_points", "unplanned_downtime_rate"):
        assert day_metric(metric, empty) is None


def test_unknown_metric_is_named():
    with pytest.raises(ValueError, match="unknown metric 'uptime'"):
        day_metric("uptime", _day(100))


def test_sufficiency_reasons():
    rule = contract.Sufficiency(min_planned_busy_min=30, max_offline_share=0.2)
    assert day_sufficiency(_day(300), rule).ok is True
    # 480 planned + 240 offline: a third of the exposed time has no data.
    gap = day_sufficiency(_day(300, offline_min=240), rule)
    assert gap.ok is False
    assert gap.reasons == ["no data for 33.3% of planned busy and offline time, above the maximum of 20.0%"]
    assert gap.covered_min == 480.0
    idle_day = kpis(totals_from_columns([10 * MIN, 0, 470 * MIN, 0, 0, 0]))
    short = day_sufficiency(idle_day, rule)
    assert short.reasons == ["planned busy time 10.0 min is below the minimum of 30 min"]


def test_sufficiency_fails_when_metric_undefined():
    no_parts = kpis(totals_from_columns([300 * MIN, 180 * MIN, 0, 0, 0, 0]))
    check = day_sufficiency(no_parts, contract.Sufficiency(), metric="oee_points")
    assert check.ok is False
    assert "oee_points is undefined" in check.reasons[0]


def _baseline_days():
    return [
        ("2024-01-01", _day(240)),  # 50 points
        ("2024-01-02", _day(264)),  # 55
        ("2024-01-03", _day(216)),  # 45
        ("2024-01-04", _day(240, offline_min=400)),  # too much missing data: excluded
        ("2024-01-05", _day(288)),  # 60
        ("2023-12-31", _day(480)),  # outside the baseline period: ignored
    ]


def test_baseline_is_mean_of_covered_days():
    baseline = build_baseline(_anchor(), _baseline_days())
    assert baseline.daily == (("2024-01-01", 50.0), ("2024-01-02", 55.0), ("2024-01-03", 45.0), ("2024-01-05", 60.0))
    assert baseline.value == 52.5
    assert baseline.days == 4
    assert list(baseline.excluded) == ["2024-01-04"]
    assert baseline.first_date == "2024-01-01"
    assert baseline.last_date == "2024-01-10"
    claim = baseline.claim()
    assert claim.digest == baseline.digest
    assert claim.digest.startswith("sha256:")


def test_baseline_digest_follows_the_day_table():
    first = build_baseline(_anchor(), _baseline_days())
    again = build_baseline(_anchor(), list(reversed(_baseline_days())))
    assert again.digest == first.digest
    changed = _baseline_days()
    changed[0] = ("2024-01-01", _day(241))
    assert build_baseline(_anchor(), changed).digest != first.digest


def test_insufficient_baseline_names_days_and_fix():
    with pytest.raises(InsufficientBaseline) as caught:
        build_baseline(_anchor(min_days=5), _baseline_days())
    error = caught.value
    assert error.covered == 4
    assert error.required == 5
    assert "2024-01-04: no data for" in str(error)
    assert "lower baseline.min_days" in str(error)
    assert "Days were excluded by sufficiency.max_offline_share (the share of time without data a day may have);" in str(error)
    assert "min_planned_busy_min" not in str(error)


def test_insufficient_baseline_names_busy_time_limit():
    # Both days plan 480 minutes, below a minimum of 600.
    days = [("2024-01-01", _day(240)), ("2024-01-02", _day(300))]
    with pytest.raises(InsufficientBaseline) as caught:
        build_baseline(_anchor(min_days=2, sufficiency=contract.Sufficiency(min_planned_busy_min=600.0)), days)
    message = str(caught.value)
    assert "Days were excluded by sufficiency.min_planned_busy_min (the planned busy time a day needs);" in message
    assert "max_offline_share" not in message


def test_duplicate_day_is_rejected():
    with pytest.raises(ValueError, match="plant date 2024-01-01 appears twice"):
        build_baseline(_anchor(), [("2024-01-01", _day(240)), ("2024-01-01", _day(240))])


def _bootstrap_means(values, resamples, block_len, seed):
    """Moving-block bootstrap as docs/methodology.md states it, with Python integers for xorshift64."""
    mask = 2**64 - 1
    state = (seed ^ 0x9E3779B97F4A7C15) & mask or 0x9E3779B97F4A7C15

    def step(x):
        x ^= (x << 13) & mask
        x ^= x >> 7
        return x ^ ((x << 17) & mask)

    n, block_len = len(values), min(block_len, len(values))
    for _ in range(8):
        state = step(state)
    means = []
    for _ in range(resamples):
        picked = []
        while len(picked) < n:
            state = step(state)
            first = state % (n - block_len + 1)
            picked += values[first : first + block_len]
        means.append(sum(picked[:n]) / n)
    return means


def _second_interval(baseline_values, day_value, settings, scale=1.0, sign=1):
    """Recompute the interval with a second bootstrap and a hand-written type-7 quantile."""
    means = _bootstrap_means(list(baseline_values), settings.resamples, settings.block_days, settings.seed)
    samples = sorted(sign * (day_value - mean) * scale for mean in means)

    def quantile(p):
        h = (len(samples) - 1) * p
        below = int(h)
        return samples[below] + (h - below) * (samples[min(below + 1, len(samples) - 1)] - samples[below])

    return round(quantile(0.025), DECIMALS), round(quantile(0.975), DECIMALS)


def test_oee_points_gained():
    anchor = _anchor()
    baseline = build_baseline(anchor, _baseline_days())
    reporting, delta, sufficiency = value_for_day(anchor, baseline, "2024-02-05", _day(300))  # 62.5 points
    assert sufficiency.ok is True
    assert reporting.value == 62.5
    assert reporting.running_day is True
    assert delta.quantity == "oee_points"
    assert delta.point == 10.0
    low, high = _second_interval([v for _, v in baseline.daily], 62.5, anchor.uncertainty)
    assert (delta.low, delta.high) == pytest.approx((low, high), abs=2e-6)
    assert delta.low <= delta.point <= delta.high
    assert delta.resamples == 500
    assert delta.seed == 99


def test_avoided_downtime_minutes():
    anchor = _anchor(metric="unplanned_downtime_rate")
    days = [("2024-01-01", _day(300, unplanned_min=48)), ("2024-01-02", _day(300, unplanned_min=32)), ("2024-01-03", _day(300, unplanned_min=40))]
    baseline = build_baseline(anchor, days)
    assert baseline.value == 5.0  # mean of 6, 4 and 5 min per planned hour
    reporting, delta, _ = value_for_day(anchor, baseline, "2024-02-01", _day(300, unplanned_min=24))  # 3 min/h
    assert reporting.value == 3.0
    assert delta.quantity == "avoided_downtime_min"
    assert delta.point == 16.0  # (5 - 3) x 8 planned busy hours
    low, high = _second_interval([6.0, 4.0, 5.0], 3.0, anchor.uncertainty, scale=8.0, sign=-1)
    assert (delta.low, delta.high) == pytest.approx((low, high), abs=2e-6)
    assert metric_claim("unplanned_downtime_rate").better == "lower"


def test_insufficient_day_claims_nothing():
    anchor = _anchor()
    baseline = build_baseline(anchor, _baseline_days())
    reporting, delta, sufficiency = value_for_day(anchor, baseline, "2024-02-02", _day(300, offline_min=480))
    assert sufficiency.ok is False
    assert reporting.running_day is False
    assert (delta.point, delta.low, delta.high) == (0.0, 0.0, 0.0)


def test_day_outside_reporting_period_is_rejected():
    anchor = _anchor()
    baseline = build_baseline(anchor, _baseline_days())
    with pytest.raises(ValueError, match="plant date 2024-03-01 lies outside the reporting period 2024-02-01..2024-02-29"):
        value_for_day(anchor, baseline, "2024-03-01", _day(300))


def test_results_are_rounded_and_repeatable():
    anchor = _anchor(metric="availability_points")
    baseline = build_baseline(anchor, _baseline_days())
    day = kpis(totals_from_columns([100 * MIN, 236 * MIN, 0, 0, 0, 0], produced=200, ideal_cycle_time_s=30.0))  # 100/336 = 29.7619047...%
    first = value_for_day(anchor, baseline, "2024-02-10", day)
    second = value_for_day(anchor, build_baseline(anchor, _baseline_days()), "2024-02-10", day)
    assert first == second
    assert first[0].value == 29.761905
    assert rounded(-0.0000001) == 0.0


def test_billable_quantity_modes():
    anchor = _anchor()
    _, delta, _ = value_for_day(anchor, build_baseline(anchor, _baseline_days()), "2024-02-05", _day(300))
    assert billable_quantity(delta, "point") == delta.point
    assert billable_quantity(delta, "lower_bound") == delta.low
    with pytest.raises(ValueError, match="unknown settlement mode 'mean'"):
        billable_quantity(delta, "mean")
