"""The worked example of docs/methodology.md: every figure it states, recomputed."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

from valuegate.edge.kernels import kpis, totals_from_columns
from valuegate.edge.methodology import build_baseline, value_for_day
from valuegate.edge.protocol import contract

DOCS = Path(__file__).resolve().parents[2] / "docs"
MINUTE = 60_000


def _day(run, unplanned, produced, rejected, offline=0):
    times = [run * MINUTE, (480 - run - unplanned) * MINUTE, 0, unplanned * MINUTE, 0, offline * MINUTE]
    return kpis(totals_from_columns(times, produced=produced, reject=rejected, stops=2, ideal_cycle_time_s=30.0))


BASELINE_DAYS = [
    ("2024-05-06", _day(360, 60, 648, 18)),
    ("2024-05-07", _day(384, 48, 672, 12)),
    ("2024-05-08", _day(336, 84, 600, 24)),
    ("2024-05-09", _day(240, 30, 420, 6, offline=300)),
    ("2024-05-10", _day(372, 54, 660, 12)),
]
REPORTING_DAY = _day(408, 36, 744, 12)


def _anchor(metric):
    return contract.Anchor(
        id="press-oee",
        scope=["press-1"],
        metric=metric,
        baseline=contract.BaselineSpec(first_date=dt.date(2024, 5, 6), last_date=dt.date(2024, 5, 10), min_days=4),
        reporting=contract.PeriodSpec(first_date=dt.date(2024, 6, 3), last_date=dt.date(2024, 6, 30)),
    )


def test_oee_points_example():
    anchor = _anchor("oee_points")
    baseline = build_baseline(anchor, BASELINE_DAYS)
    assert [value for _, value in baseline.daily] == [65.625, 68.75, 60.0, 67.5]
    assert list(baseline.excluded) == ["2024-05-09"]
    assert baseline.value == 65.46875
    reporting, delta, sufficiency = value_for_day(anchor, baseline, "2024-06-03", REPORTING_DAY)
    assert reporting.value == 76.25
    assert sufficiency.ok is True
    assert delta.point == 10.78125
    assert (delta.low, delta.high) == (10.0, 11.25)
    assert Decimal(str(delta.point)) * 800 == Decimal("8625.00")


def test_avoided_downtime_example():
    anchor = _anchor("unplanned_downtime_rate")
    baseline = build_baseline(anchor, BASELINE_DAYS)
    assert baseline.value == 7.6875
    reporting, delta, _ = value_for_day(anchor, baseline, "2024-06-03", REPORTING_DAY)
    assert reporting.value == 4.5
    assert delta.point == 25.5
    assert (delta.low, delta.high) == (22.5, 27.0)


def test_docs_state_the_computed_figures():
    for name in ("methodology.md", "methodology.zh-CN.md"):
        text = (DOCS / name).read_text(encoding="utf-8")
        for figure in ("65.46875", "7.6875", "10.78125", "25.5", "10.0", "11.25", "22.5", "27.0", "8,625.00"):
            assert figure in text, f"{name} lacks {figure}"


def test_docs_snippet_prints_the_stated_interval(capsys) -> None:  # noqa: ANN001
    """Both languages carry the same snippet; run as printed, it gives the interval the text states."""
    snippets = []
    for name in ("methodology.md", "methodology.zh-CN.md"):
        text = (DOCS / name).read_text(encoding="utf-8")
        start = text.index("```python\n") + len("```python\n")
        snippets.append(text[start:text.index("```", start)])
    assert snippets[0] == snippets[1]
    exec(compile(snippets[0], "methodology snippet", "exec"), {})  # noqa: S102 - the docs' own example
    printed = capsys.readouterr().out
    assert "point=10.78125" in printed
    assert "low=10.0" in printed
    assert "high=11.25" in printed
