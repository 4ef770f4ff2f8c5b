"""Micro-stop detection against a slow scan of the millisecond timeline, on random and seeded traces and a case worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from valuegate.edge.kernels import UNPLANNED_STOP, debounce, micro_stops, state_intervals

from . import reference

SETTINGS = settings(derandomize=True, max_examples=200, deadline=None)

samples = st.lists(
    st.tuples(st.integers(0, 3000), st.one_of(st.integers(-1, 5), st.just(math.nan)), st.integers(-1, 3)),
    max_size=30,
)


def scan_micro_stops(states, reasons, start: int, threshold_ms: int) -> list[tuple[int, int]]:
    """Return (start, end) of each unplanned stop shorter than ``threshold_ms``, walking the timeline one millisecond at a time.

    A stop runs while the state stays unplanned_stop with the same reason; a change of reason starts another stop.
    """
    found = []
    began = None
    for offset in range(len(states) + 1):
        ends_here = offset == len(states) or (offset > 0 and (states[offset], reasons[offset]) != (states[offset - 1], reasons[offset - 1]))
        if began is not None and ends_here:
            if offset - began < threshold_ms:
                found.append((start + began, start + offset))
            began = None
        if offset < len(states) and states[offset] == UNPLANNED_STOP and (began is None or ends_here):
            began = offset
    return found


def flagged(iv, threshold_ms: int) -> list[tuple[int, int]]:
    flags = micro_stops(iv, threshold_ms)
    assert flags.dtype == np.bool_
    assert flags.shape == iv.start_ms.shape
    return [(int(iv.start_ms[i]), int(iv.end_ms[i])) for i in np.flatnonzero(flags)]


@SETTINGS
@given(samples, st.integers(-200, 1500), st.integers(0, 3500), st.integers(0, 1200))
def test_micro_stops_match_timeline_scan(rows, start, length, threshold):
    end = start + length
    ts, state, reason = ([row[k] for row in rows] for k in range(3))
    iv = state_intervals(np.array(ts, np.int64), np.array(state, np.float64), np.array(reason, np.int32), end, start_ms=start)
    timeline = reference.timeline_from_samples(ts, state, reason, start, end)
    assert flagged(iv, threshold) == scan_micro_stops(*timeline, start, threshold)


@SETTINGS
@given(samples, st.integers(0, 3500), st.integers(0, 400), st.integers(0, 1200))
def test_micro_stops_after_debounce_match_scan(rows, length, min_ms, threshold):
    ts, state, reason = ([row[k] for row in rows] for k in range(3))
    iv = debounce(state_intervals(np.array(ts, np.int64), np.array(state, np.float64), np.array(reason, np.int32), length, start_ms=0), min_ms)
    runs = reference.debounce(reference.run_length(*reference.timeline_from_samples(ts, state, reason, 0, length), 0), min_ms)
    timeline = reference.timeline_from_intervals(runs, 0, length)
    assert flagged(iv, threshold) == scan_micro_stops(*timeline, 0, threshold)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_seeded_long_trace_matches_scan(seed):
    # 2,000 samples 1-40 ms apart over a few states, so that stops of every length around the threshold occur.
    rng = np.random.default_rng(seed)
    ts = np.cumsum(rng.integers(1, 40, 2_000)).astype(np.int64)
    state = rng.choice([0, 2, 3, 3, 3, 5], 2_000).astype(np.float64)
    reason = rng.integers(-1, 3, 2_000).astype(np.int32)
    end = int(ts[-1]) + 50
    iv = state_intervals(ts, state, reason, end, start_ms=0)
    timeline = reference.timeline_from_samples(ts.tolist(), state.tolist(), reason.tolist(), 0, end)
    expected = scan_micro_stops(*timeline, 0, 60)
    assert len(expected) > 50
    assert flagged(iv, 60) == expected


def test_filler_stops_by_hand():
    # State codes: 0 running, 2 planned stop, 3 unplanned stop. Running from 0 s on, with unplanned stops of
    # 30 s (reason 1), 119.999 s (reason 2), exactly 120 s (reason 1) and 300 s (reason 3), then 60 s of
    # reason 1 followed at once by 60 s of reason 2. A planned stop of 10 s is no micro-stop.
    second = 1000
    events = [
        (0, 0, -1),
        (100 * second, 3, 1), (130 * second, 0, -1),
        (200 * second, 3, 2), (200 * second + 119_999, 0, -1),
        (400 * second, 3, 1), (520 * second, 0, -1),
        (600 * second, 3, 3), (900 * second, 0, -1),
        (1000 * second, 3, 1), (1060 * second, 3, 2), (1120 * second, 0, -1),
        (1200 * second, 2, -1), (1210 * second, 0, -1),
    ]  # fmt: skip
    ts, state, reason = (np.array([event[k] for event in events]) for k in range(3))
    iv = state_intervals(ts.astype(np.int64), state.astype(np.float64), reason.astype(np.int32), 1300 * second, start_ms=0)
    assert flagged(iv, 120 * second) == [
        (100 * second, 130 * second),
        (200 * second, 200 * second + 119_999),
        (1000 * second, 1060 * second),
        (1060 * second, 1120 * second),
    ]
    # With a zero threshold nothing is a micro-stop; with 301 s every unplanned stop is.
    assert flagged(iv, 0) == []
    assert len(flagged(iv, 301 * second)) == 6


def test_negative_threshold_names_the_value():
    iv = state_intervals(np.array([0], np.int64), np.array([3.0]), np.array([1], np.int32), 10)
    with pytest.raises(ValueError, match="threshold_ms -1 is negative"):
        micro_stops(iv, -1)
