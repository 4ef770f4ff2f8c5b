"""Insufficient-day reasons: the sentences the edge methodology writes are recognized, translated and sorted from no-production days."""

from __future__ import annotations

import datetime as dt

import pytest

from valuegate.cloud.web.reasons import date_ranges, no_production_scheduled, parse_reason, reason_text
from valuegate.edge.kernels import kpis, totals_from_columns
from valuegate.edge.methodology import day_sufficiency
from valuegate.edge.protocol.contract import Sufficiency

RULE = Sufficiency(min_planned_busy_min=30.0, max_offline_share=0.2)
MINUTE_MS = 60_000


def reasons_of(metric: str, *, running: int = 0, planned_stop: int = 0, offline: int = 0, produced: int = 0) -> list[str]:
    """Return the reasons the real methodology gives for a day with these minutes per state."""
    state_ms = [running * MINUTE_MS, 0, planned_stop * MINUTE_MS, 0, 0, offline * MINUTE_MS]
    day = kpis(totals_from_columns(state_ms, produced=produced, ideal_cycle_time_s=5.0))
    check = day_sufficiency(day, RULE, metric=metric)
    assert not check.ok
    return list(check.reasons)


def test_weekend_oee_day_is_no_production() -> None:
    sentences = reasons_of("oee_points", planned_stop=1440)
    reasons = [parse_reason(text) for text in sentences]
    assert [r.code for r in reasons] == ["planned_busy_below_minimum", "metric_undefined"]
    assert [reason_text(r, "zh-CN") for r in reasons] == [
        "计划生产时间 0.0 分钟，低于最低要求 30 分钟",
        "OEE（百分点）无法计算：可用率、性能效率和合格率无法计算",
    ]
    assert reason_text(reasons[1], "en") == "OEE (percentage points) is undefined: availability, performance and quality cannot be computed"
    assert no_production_scheduled(0.0, reasons)


def test_availability_gap_names_zero_planned_time() -> None:
    (_, gap) = [parse_reason(text) for text in reasons_of("availability_points", planned_stop=1440)]
    assert gap.values == {"metric": "availability_points", "why": "planned_busy_zero"}
    assert reason_text(gap, "zh-CN") == "可用率（百分点）无法计算：计划生产时间为零，时段内没有运行、空闲、非计划停机或换型时间"


def test_offline_day_stays_a_finding() -> None:
    reasons = [parse_reason(text) for text in reasons_of("unplanned_downtime_rate", offline=1440)]
    assert [r.code for r in reasons] == ["planned_busy_below_minimum", "offline_share_above_maximum", "metric_undefined"]
    assert reason_text(reasons[1], "zh-CN") == "计划生产及离线时间中有 100.0% 没有数据，超过上限 20.0%"
    assert not no_production_scheduled(0.0, reasons)


def test_short_day_stays_a_finding() -> None:
    reasons = [parse_reason(text) for text in reasons_of("oee_points", running=20, planned_stop=1420, produced=200)]
    assert [r.code for r in reasons] == ["planned_busy_below_minimum"]
    assert reason_text(reasons[0], "en") == "planned busy time 20.0 min is below the minimum of 30 min"
    assert not no_production_scheduled(20.0, reasons)


@pytest.mark.parametrize("text", ["planned_busy_below_minimum", "sensor cable cut", "oee_points is undefined: the moon was full"])
def test_unknown_sentence_shown_as_is(text: str) -> None:
    reason = parse_reason(text)
    assert reason.code == "other"
    assert reason_text(reason, "zh-CN") == text
    assert not no_production_scheduled(0.0, [reason])


def test_date_ranges_join_consecutive_days() -> None:
    days = [dt.date(2022, 9, 24), dt.date(2022, 9, 25), dt.date(2022, 10, 1), dt.date(2022, 9, 26), dt.date(2022, 10, 8)]
    assert date_ranges(days, "en") == ["2022-09-24 – 2022-09-26", "2022-10-01", "2022-10-08"]
    assert date_ranges(days[:2], "zh-CN") == ["2022年9月24日 – 2022年9月25日"]
