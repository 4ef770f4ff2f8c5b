"""Minute tables and window sums against millisecond-timeline references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from valuegate.edge.kernels import Intervals, minute_table, window_totals

from . import reference

SETTINGS = settings(derandomize=True, max_examples=60, deadline=None)


def _iv(rows) -> Intervals:
    columns = list(zip(*rows, strict=True)) if rows else [[], [], [], []]
    return Intervals(np.array(columns[0], np.int64), np.array(columns[1], np.int64), np.array(columns[2], np.int8), np.array(columns[3], np.int32))


@st.composite
def interval_rows(draw):
    # Non-overlapping intervals with gaps, some starting before the table and ending after it.
    t = draw(st.integers(-90_000, 30_000))
    rows = []
    for _ in range(draw(st.integers(0, 12))):
        t += draw(st.integers(0, 40_000))
        length = draw(st.integers(1, 100_000))
        rows.append((t, t + length, draw(st.integers(0, 5)), draw(st.integers(-1, 2))))
        t += length
    return rows


@SETTINGS
@given(interval_rows(), st.integers(0, 4))
def test_minute_table_matches_reference(rows, n_minutes):
    table = minute_table(_iv(rows), 0, n_minutes, 3)
    state_ms, reason_ms, stops = reference.minute_table(rows, 0, n_minutes, 3)
    assert table.minute_ms.tolist() == [m * 60_000 for m in range(n_minutes)]
    assert table.state_ms.tolist() == state_ms
    assert table.reason_ms.tolist() == reason_ms
    assert table.stops.tolist() == stops


def test_minute_rows_sum_to_a_minute():
    table = minute_table(_iv([(30_000, 90_000, 0, -1)]), 0, 3, 0)
    assert table.state_ms.sum(axis=1).tolist() == [60_000, 60_000, 60_000]
    assert table.state_ms[:, 0].tolist() == [30_000, 30_000, 0]
    assert table.state_ms[:, 5].tolist() == [30_000, 30_000, 60_000]


def test_stop_counted_in_minute_it_starts():
    table = minute_table(_iv([(50_000, 130_000, 3, 1), (130_000, 140_000, 0, -1), (140_000, 150_000, 3, -1)]), 0, 3, 2)
    assert table.stops.tolist() == [1, 0, 1]
    assert table.reason_ms[:, 1].tolist() == [10_000, 60_000, 10_000]
    assert table.state_ms[:, 3].tolist() == [10_000, 60_000, 20_000]


def test_reason_beyond_table_is_named():
    with pytest.raises(ValueError, match="reason index 4 of an unplanned stop is not below n_reasons=2"):
        minute_table(_iv([(0, 10, 3, 4)]), 0, 1, 2)


@SETTINGS
@given(
    st.lists(st.integers(0, 20), min_size=0, max_size=12, unique=True),
    st.lists(st.tuples(st.integers(-2, 22), st.integers(0, 10)), max_size=5),
)
def test_window_totals_match_reference(minutes, windows):
    minutes = sorted(minutes)
    minute_ms = np.array([m * 60_000 for m in minutes], np.int64)
    columns = np.arange(len(minutes) * 3, dtype=np.int64).reshape(len(minutes), 3)
    starts = [w[0] * 60_000 for w in windows]
    ends = [(w[0] + w[1]) * 60_000 for w in windows]
    result = window_totals(minute_ms, columns, starts, ends)
    for w in range(len(windows)):
        expected = [0, 0, 0]
        for row, m in enumerate(minute_ms):
            if starts[w] <= m < ends[w]:
                expected = [a + int(b) for a, b in zip(expected, columns[row], strict=True)]
        assert result[w].tolist() == expected


def test_window_totals_need_sorted_minutes():
    with pytest.raises(ValueError, match=r"minute_ms\[1\] = 0 does not follow"):
        window_totals([60_000, 0], np.ones((2, 1), np.int64), [0], [120_000])
