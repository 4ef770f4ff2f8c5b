"""State intervals, debouncing and micro-stops against millisecond-timeline references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from valuegate.edge.kernels import OFFLINE, Intervals, debounce, gaps_touching, micro_stops, state_intervals

from . import reference

SETTINGS = settings(derandomize=True, max_examples=150, deadline=None)

samples = st.lists(
    st.tuples(
        st.integers(0, 3000),
        st.one_of(st.integers(-1, 5), st.just(math.nan)),
        st.integers(-1, 3),
    ),
    max_size=25,
)


def _as_tuples(iv: Intervals) -> list[tuple[int, int, int, int]]:
    return [tuple(int(column[i]) for column in iv) for i in range(iv.start_ms.shape[0])]


@SETTINGS
@given(samples, st.integers(-200, 1500), st.integers(0, 3500))
def test_state_intervals_match_reference(rows, start, length):
    end = start + length
    ts = [row[0] for row in rows]
    state = [row[1] for row in rows]
    reason = [row[2] for row in rows]
    iv = state_intervals(np.array(ts, np.int64), np.array(state, np.float64), np.array(reason, np.int32), end, start_ms=start)
    expected = reference.run_length(*reference.timeline_from_samples(ts, state, reason, start, end), start)
    assert _as_tuples(iv) == expected


@SETTINGS
@given(samples.filter(bool), st.integers(0, 3500))
def test_state_intervals_without_start(rows, end):
    ts = [row[0] for row in rows]
    state = [row[1] for row in rows]
    reason = [row[2] for row in rows]
    first = min(ts)
    iv = state_intervals(ts, np.array(state, np.float64), reason, max(end, first))
    expected = reference.run_length(*reference.timeline_from_samples(ts, state, reason, first, max(end, first)), first)
    assert _as_tuples(iv) == expected


@SETTINGS
@given(samples, st.integers(-200, 1500), st.integers(0, 3500), st.integers(1, 800))
def test_max_gap_matches_reference(rows, start, length, max_gap):
    end = start + length
    ts = [row[0] for row in rows]
    state = [row[1] for row in rows]
    reason = [row[2] for row in rows]
    iv = state_intervals(ts, np.array(state, np.float64), reason, end, start_ms=start, max_gap_ms=max_gap)
    expected = reference.run_length(*reference.timeline_from_samples(ts, state, reason, start, end, max_gap), start)
    assert _as_tuples(iv) == expected


def test_silent_gap_becomes_offline():
    iv = state_intervals([0, 10_000, 60_000], [0, 0, 1], [-1, -1, -1], 70_000, max_gap_ms=5_000)
    assert _as_tuples(iv) == [
        (0, 5_000, 0, -1),
        (5_000, 10_000, 5, -1),
        (10_000, 15_000, 0, -1),
        (15_000, 60_000, 5, -1),
        (60_000, 65_000, 1, -1),
        (65_000, 70_000, 5, -1),
    ]


def test_equal_timestamps_last_sample_wins():
    iv = state_intervals([0, 1000, 1000, 1000], [0, 1, 3, 4], [-1, -1, 7, -1], 2000)
    assert _as_tuples(iv) == [(0, 1000, 0, -1), (1000, 2000, 4, -1)]


def test_out_of_order_samples_are_sorted():
    iv = state_intervals([2000, 0, 1000], [1, 0, 3], [-1, -1, 2], 3000)
    assert _as_tuples(iv) == [(0, 1000, 0, -1), (1000, 2000, 3, 2), (2000, 3000, 1, -1)]


def test_nan_and_minus_one_are_offline():
    iv = state_intervals([0, 10, 20, 30], np.array([0.0, math.nan, -1.0, 0.0]), [-1, 5, 5, -1], 40)
    assert _as_tuples(iv) == [(0, 10, 0, -1), (10, 30, 5, -1), (30, 40, 0, -1)]


def test_gap_before_first_sample_is_offline():
    iv = state_intervals([500], [0], [-1], 1000, start_ms=0)
    assert _as_tuples(iv) == [(0, 500, 5, -1), (500, 1000, 0, -1)]


def test_empty_window_and_empty_samples():
    assert _as_tuples(state_intervals([], [], [], 1000)) == []
    assert _as_tuples(state_intervals([], [], [], 1000, start_ms=0)) == [(0, 1000, 5, -1)]
    assert _as_tuples(state_intervals([10], [0], [-1], 500, start_ms=500)) == []


def test_single_sample_holds_until_end():
    assert _as_tuples(state_intervals([100], [2], [-1], 700)) == [(100, 700, 2, -1)]


def test_samples_after_end_are_ignored():
    assert _as_tuples(state_intervals([0, 900, 1000, 1500], [0, 1, 3, 4], [-1] * 4, 1000)) == [(0, 900, 0, -1), (900, 1000, 1, -1)]


def test_bad_state_code_is_named():
    with pytest.raises(ValueError, match=r"state\[1\] = 7 is not a state code"):
        state_intervals([0, 1], [0, 7], [-1, -1], 10)


def test_fractional_timestamp_is_named():
    with pytest.raises(ValueError, match=r"ts_ms\[0\] = 0.5 is not a whole number"):
        state_intervals(np.array([0.5]), [0], [-1], 10)


def test_length_mismatch_is_named():
    with pytest.raises(ValueError, match="ts_ms=2, state=1, reason=2"):
        state_intervals([0, 1], [0], [-1, -1], 10)


def test_end_before_start_is_rejected():
    with pytest.raises(ValueError, match="end_ms 5 is before start_ms 10"):
        state_intervals([0], [0], [-1], 5, start_ms=10)


intervals_strategy = st.lists(st.tuples(st.integers(1, 400), st.integers(0, 5), st.integers(-1, 2)), max_size=30)


def _contiguous(pieces, origin=1000):
    out, t = [], origin
    for length, s, r in pieces:
        out.append((t, t + length, s, r))
        t += length
    return out


def _iv(rows) -> Intervals:
    columns = list(zip(*rows, strict=True)) if rows else [[], [], [], []]
    return Intervals(np.array(columns[0], np.int64), np.array(columns[1], np.int64), np.array(columns[2], np.int8), np.array(columns[3], np.int32))


@SETTINGS
@given(intervals_strategy, st.integers(0, 300))
def test_debounce_matches_reference(pieces, min_ms):
    rows = _contiguous(pieces)
    assert _as_tuples(debounce(_iv(rows), min_ms)) == reference.debounce(rows, min_ms)


def test_debounce_absorbs_toggling():
    rows = [(0, 60_000, 0, -1), (60_000, 61_000, 1, -1), (61_000, 61_500, 0, -1), (61_500, 62_000, 1, -1), (62_000, 200_000, 0, -1)]
    assert _as_tuples(debounce(_iv(rows), 5_000)) == [(0, 200_000, 0, -1)]


def test_debounce_keeps_short_offline_gaps():
    rows = [(0, 60_000, 0, -1), (60_000, 61_000, 5, -1), (61_000, 120_000, 0, -1)]
    assert _as_tuples(debounce(_iv(rows), 5_000)) == rows


def test_debounce_rejects_overlap():
    with pytest.raises(ValueError, match=r"iv\[1\] starts at 50, before iv\[0\] ends at 100"):
        debounce(_iv([(0, 100, 0, -1), (50, 200, 1, -1)]), 10)


def test_micro_stops_threshold():
    rows = [(0, 100, 3, 1), (100, 300, 0, -1), (300, 420, 3, 2), (420, 500, 1, -1), (500, 519, 3, -1)]
    assert micro_stops(_iv(rows), 120).tolist() == [True, False, False, False, True]
    assert micro_stops(_iv([]), 120).tolist() == []


def _long_state_trace(seed: int, n: int, mean_run: int):
    """Return ``n`` samples a few ms apart in runs of about ``mean_run`` repeats, with no-data runs and equal timestamps."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 2 * mean_run, n)
    run_states = rng.integers(-1, 6, lengths.size)
    run_states[1::2] = run_states[::2][: run_states[1::2].size]  # every other run changes only the reason
    run_reasons = np.arange(lengths.size, dtype=np.int32) % 3 - 1
    state = np.repeat(run_states, lengths)[:n].astype(np.float64)
    reason = np.repeat(run_reasons, lengths)[:n].astype(np.int32)
    ts = np.cumsum(rng.integers(0, 4, n)).astype(np.int64)  # steps of 0 give equal timestamps
    state[state < 0] = math.nan
    return ts, state, reason


@pytest.mark.parametrize("mean_run", [2, 30, 400, 5_000])
def test_long_state_trace_matches_reference(mean_run):
    # Long runs let the kernel skip whole blocks of repeated samples and narrow down on each change.
    ts, state, reason = _long_state_trace(mean_run, 4_000, mean_run)
    start, end = 40, int(ts[-1]) - 30  # the last samples lie past the end
    iv = state_intervals(ts, state, reason, end, start_ms=start)
    expected = reference.run_length(*reference.timeline_from_samples(ts.tolist(), state.tolist(), reason.tolist(), start, end), start)
    assert _as_tuples(iv) == expected


def test_long_state_trace_out_of_order_matches_reference():
    ts, state, reason = _long_state_trace(9, 4_000, 300)
    ts[[700, 2_500]] = ts[[2_500, 700]]
    iv = state_intervals(ts, state, reason, int(ts.max()) + 10, start_ms=0)
    expected = reference.run_length(*reference.timeline_from_samples(ts.tolist(), state.tolist(), reason.tolist(), 0, int(ts.max()) + 10), 0)
    assert _as_tuples(iv) == expected


def test_late_sample_anywhere_in_a_long_run_is_sorted():
    # One sample stamped after the next change, at every position of a long run: the result must not depend on where blocks start.
    ts = 10 * np.arange(1_500, dtype=np.int64)
    state = np.zeros(1_500, np.int8)
    state[1_400:] = 1
    reason = np.full(1_500, -1, np.int32)
    for late in range(1, 1_399):
        shifted = ts.copy()
        shifted[late] = ts[1_450]  # ties with a later sample: the stable sort keeps input order
        order = np.argsort(shifted, kind="stable")
        expected = state_intervals(shifted[order], state[order], reason[order], 15_000, start_ms=0)
        assert _as_tuples(state_intervals(shifted, state, reason, 15_000, start_ms=0)) == _as_tuples(expected), late
    assert _as_tuples(expected) == [(0, 14_000, 0, -1), (14_000, 15_000, 1, -1)]


def test_gaps_touching_offline_by_hand():
    # Offline runs [100, 200) and [500, 600); running elsewhere.
    iv = Intervals(
        np.array([0, 100, 200, 500, 600], np.int64),
        np.array([100, 200, 500, 600, 900], np.int64),
        np.array([0, OFFLINE, 0, OFFLINE, 0], np.int8),
        np.full(5, -1, np.int32),
    )
    ts = [50, 100, 150, 300, 450, 500, 650, 700]
    # Gaps: (50,100] ends as offline starts; (100,150] inside; (150,300] leaves it;
    # (300,450] clear; (450,500] ends as offline starts; (500,650] spans it; (650,700] clear.
    assert gaps_touching(ts, iv, OFFLINE).tolist() == [False, False, True, True, False, False, True, False]
    assert gaps_touching([], iv, OFFLINE).tolist() == []
    assert gaps_touching([10, 20], iv, 3).tolist() == [False, False]  # no run of that state


def test_gaps_touching_refuses_unsorted_samples():
    iv = Intervals(np.array([0], np.int64), np.array([10], np.int64), np.array([OFFLINE], np.int8), np.array([-1], np.int32))
    with pytest.raises(ValueError, match=r"ts_ms\[2\] \(3\) is before ts_ms\[1\] \(5\)"):
        gaps_touching([1, 5, 3], iv, OFFLINE)
