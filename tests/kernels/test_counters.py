"""Counter normalization: wraps, resets and glitches against a plain-integer reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from valuegate.edge.kernels import GLITCH, NORMAL, RESET, WRAP, bucket_counts, counter_minutes, gaps_since_accepted, normalize_counter

from . import reference

SETTINGS = settings(derandomize=True, max_examples=150, deadline=None)
WIDTHS = [(16, False), (16, True), (32, False), (32, True), (64, False), (64, True)]


def test_16_bit_wrap_counts_ten():
    steps = normalize_counter([0, 60_000], np.array([65530, 4], np.uint16), bits=16, signed=False, max_rate_per_min=60)
    assert steps.increments.tolist() == [0, 10]
    assert steps.kind.tolist() == [NORMAL, WRAP]


def test_plc_restart_is_a_reset_never_negative():
    # One minute apart at 60 parts/min: 718 parts cannot have been made since a restart.
    steps = normalize_counter([0, 60_000], np.array([439534, 718], np.int32), bits=32, signed=True, max_rate_per_min=60)
    assert steps.increments.tolist() == [0, 0]
    assert steps.kind.tolist() == [NORMAL, RESET]
    # Twenty minutes apart the 718 parts since the restart fit the rate and count.
    steps = normalize_counter([0, 1_200_000], np.array([439534, 718], np.uint32), bits=32, signed=False, max_rate_per_min=60)
    assert steps.increments.tolist() == [0, 718]
    assert steps.kind.tolist() == [NORMAL, RESET]


def test_spike_is_rejected_and_counting_resumes():
    steps = normalize_counter([0, 1000, 2000, 3000], [100, 99_999, 101, 102], bits=32, signed=False, max_rate_per_min=120)
    assert steps.increments.tolist() == [0, 0, 1, 1]
    assert steps.kind.tolist() == [NORMAL, GLITCH, NORMAL, NORMAL]


def test_confirmed_jump_rebases_without_counting_it():
    steps = normalize_counter([0, 1000, 2000, 3000], [100, 50_000, 50_001, 50_002], bits=32, signed=False, max_rate_per_min=120)
    assert steps.increments.tolist() == [0, 0, 1, 1]
    assert steps.kind.tolist() == [NORMAL, GLITCH, NORMAL, NORMAL]


def test_signed_16_bit_wrap():
    steps = normalize_counter([0, 1000], np.array([32767, -32768], np.int16), bits=16, signed=True, max_rate_per_min=60)
    assert steps.increments.tolist() == [0, 1]
    assert steps.kind.tolist() == [NORMAL, WRAP]


def test_unsigned_64_bit_wrap():
    steps = normalize_counter([0, 60_000], np.array([2**64 - 2, 3], np.uint64), bits=64, signed=False, max_rate_per_min=10)
    assert steps.increments.tolist() == [0, 5]
    assert steps.kind.tolist() == [NORMAL, WRAP]


def test_nan_sample_is_rejected_and_skipped():
    steps = normalize_counter([0, 1000, 2000], np.array([5.0, math.nan, 6.0], np.float32), bits=32, signed=False, max_rate_per_min=60)
    assert steps.increments.tolist() == [0, 0, 1]
    assert steps.kind.tolist() == [NORMAL, GLITCH, NORMAL]


def test_out_of_order_result_is_aligned_with_input():
    steps = normalize_counter([2000, 0, 1000], [12, 10, 11], bits=16, signed=False, max_rate_per_min=60)
    assert steps.increments.tolist() == [1, 0, 1]


def test_value_outside_width_is_named():
    with pytest.raises(ValueError, match=r"raw\[1\] = 70000 does not fit a 16-bit unsigned counter"):
        normalize_counter([0, 1], [1, 70000], bits=16, signed=False, max_rate_per_min=60)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="bits 12"):
        normalize_counter([0], [0], bits=12, signed=False, max_rate_per_min=60)
    with pytest.raises(ValueError, match="max_rate_per_min 0"):
        normalize_counter([0], [0], bits=16, signed=False, max_rate_per_min=0)


@st.composite
def counter_traces(draw):
    bits, signed = draw(st.sampled_from(WIDTHS))
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    count = draw(st.integers(0, 30))
    ts = draw(st.lists(st.integers(0, 600_000), min_size=count, max_size=count))
    near_edge = st.one_of(st.integers(low, low + 50), st.integers(high - 50, high), st.integers(max(low, -20), min(high, 2000)))
    values = draw(st.lists(near_edge, min_size=count, max_size=count))
    rate = draw(st.sampled_from([1.0, 10.0, 60.0, 600.0]))
    return bits, signed, ts, values, rate


@SETTINGS
@given(counter_traces())
def test_counter_matches_reference(trace):
    bits, signed, ts, values, rate = trace
    dtype = {(16, False): np.uint16, (16, True): np.int16, (32, False): np.uint32, (32, True): np.int32, (64, False): np.uint64, (64, True): np.int64}[
        (bits, signed)
    ]
    steps = normalize_counter(np.array(ts, np.int64), np.array(values, dtype), bits=bits, signed=signed, max_rate_per_min=rate)
    increments, kinds = reference.counter_steps(ts, values, bits, signed, rate)
    assert steps.increments.tolist() == increments
    assert steps.kind.tolist() == kinds
    assert all(step >= 0 for step in increments)


@SETTINGS
@given(counter_traces(), st.integers(-3, 8), st.integers(0, 12))
def test_counter_minutes_match_bucketed_steps(trace, first_minute, n_minutes):
    bits, signed, ts, values, rate = trace
    raw = np.array(values, np.float64 if bits < 64 else np.int64 if signed else np.uint64)
    minute0 = first_minute * 60_000
    result = counter_minutes(np.array(ts, np.int64), raw, minute0, n_minutes, bits=bits, signed=signed, max_rate_per_min=rate)
    increments, kinds = reference.counter_steps(ts, values, bits, signed, rate)
    expected = [0] * n_minutes
    for t, step in zip(ts, increments, strict=True):
        if minute0 <= t < minute0 + n_minutes * 60_000:
            expected[(t - minute0) // 60_000] += step
    assert result.counts.tolist() == expected
    assert result.kind_counts.tolist() == [kinds.count(kind) for kind in range(4)]


@SETTINGS
@given(st.lists(st.tuples(st.integers(-120_000, 400_000), st.integers(0, 50)), max_size=40), st.integers(0, 6))
def test_bucket_counts_match_reference(rows, n_minutes):
    ts = [row[0] for row in rows]
    increments = [row[1] for row in rows]
    expected = [0] * n_minutes
    for t, step in rows:
        if 0 <= t < n_minutes * 60_000:
            expected[t // 60_000] += step
    assert bucket_counts(ts, increments, 0, n_minutes).tolist() == expected


def test_bucket_counts_needs_minute_boundary():
    with pytest.raises(ValueError, match="minute0_ms 1000 is not on a UTC minute boundary"):
        bucket_counts([0], [1], 1000, 1)


def _long_counter_trace(seed: int, n: int, odd_every: int, bits: int, signed: bool):
    """Return a 1 Hz trace of ``n`` samples counting at most 2 per second, with a wrap and an odd sample about every ``odd_every``."""
    rng = np.random.default_rng(seed)
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    ts = 1_000 * np.arange(n, dtype=np.int64) + rng.integers(0, 50, n)
    ts[n // 2 :] += 3_600_000  # an hour without samples
    width = high - low + 1
    level = high - 300  # wraps soon after the start
    values = []
    for step, draw in zip(rng.integers(0, 3, n).tolist(), rng.random(n).tolist(), strict=True):
        level = (level + step - low) % width + low
        if draw < 1 / odd_every / 3:
            values.append(low + step)  # a PLC restart
            level = low + step
        elif draw < 2 / odd_every / 3:
            values.append((level + 50_000 - low) % width + low)  # a spike
        elif draw < 1 / odd_every:
            values.append(max(level - 7, low))  # a drop
        else:
            values.append(level)
    return ts, values


@pytest.mark.parametrize("odd_every", [3, 40, 700, 10**9])
@pytest.mark.parametrize(("dtype", "bits", "signed"), [(np.uint16, 16, False), (np.int16, 16, True), (np.uint32, 32, False), (np.int32, 32, True), (np.int64, 32, False), (np.uint64, 64, False), (np.float64, 16, False)])
def test_long_counter_matches_reference(dtype, bits, signed, odd_every):
    # Long enough for the kernel to check blocks of samples at once, grow them and narrow them down again.
    ts, values = _long_counter_trace(odd_every, 6_000, odd_every, bits, signed)
    raw = np.array(values, dtype)
    if dtype is np.float64:
        raw[1 :: odd_every + 11] = math.nan
        values = raw.tolist()
    increments, kinds = reference.counter_steps(ts.tolist(), values, bits, signed, 120.0)
    steps = normalize_counter(ts, raw, bits=bits, signed=signed, max_rate_per_min=120)
    assert steps.increments.tolist() == increments
    assert steps.kind.tolist() == kinds

    # The minute table starts after the first samples and ends inside the gap.
    minute0 = (int(ts[0]) // 60_000 + 2) * 60_000
    n_minutes = 60
    expected = [0] * n_minutes
    for t, step in zip(ts.tolist(), increments, strict=True):
        if minute0 <= t < minute0 + n_minutes * 60_000:
            expected[(t - minute0) // 60_000] += step
    result = counter_minutes(ts, raw, minute0, n_minutes, bits=bits, signed=signed, max_rate_per_min=120)
    assert result.counts.tolist() == expected
    assert result.kind_counts.tolist() == [kinds.count(kind) for kind in range(4)]


def test_long_counter_out_of_order_matches_reference():
    ts, values = _long_counter_trace(5, 3_000, 500, 16, False)
    swapped = ts.copy()
    swapped[[1000, 2200]] = swapped[[2200, 1000]]
    increments, kinds = reference.counter_steps(swapped.tolist(), values, 16, False, 120.0)
    steps = normalize_counter(swapped, np.array(values, np.uint16), bits=16, signed=False, max_rate_per_min=120)
    assert steps.increments.tolist() == increments
    assert steps.kind.tolist() == kinds


def test_missing_sample_at_zero_is_a_glitch_inside_a_long_run():
    # A NaN reads as 0 for the kernel; at a counter level of 0 only its flag distinguishes it.
    raw = np.zeros(200)
    raw[150:] = 1.0
    raw[90] = math.nan
    steps = normalize_counter(1_000 * np.arange(200), raw, bits=16, signed=False, max_rate_per_min=60)
    assert np.flatnonzero(steps.kind).tolist() == [90]
    assert steps.kind[90] == GLITCH
    assert steps.increments.sum() == 1


def test_spike_anywhere_in_a_long_run_is_rejected():
    # A spike at every position of a long run: the result must not depend on where the kernel's blocks start.
    rng = np.random.default_rng(3)
    ts = 1_000 * np.arange(1_500, dtype=np.int64) + rng.integers(0, 50, 1_500)
    values = (1_000 + np.cumsum(rng.integers(0, 3, 1_500))).tolist()
    clean, kinds = reference.counter_steps(ts.tolist(), values, 16, False, 240.0)
    assert set(kinds) == {NORMAL}
    for spike in range(1, 1_499):
        raw = np.array(values, np.uint16)
        raw[spike] += 30_000
        expected = list(clean)
        expected[spike + 1] += expected[spike]
        expected[spike] = 0
        steps = normalize_counter(ts, raw, bits=16, signed=False, max_rate_per_min=240)
        assert steps.increments.tolist() == expected, spike
        assert steps.kind[spike] == GLITCH, spike
        per_minute = counter_minutes(ts, raw, 0, 30, bits=16, signed=False, max_rate_per_min=240).counts
        assert per_minute.tolist() == bucket_counts(ts, expected, 0, 30).tolist(), spike


def test_gaps_since_accepted_by_hand():
    # Samples 2 and 3 are glitches, so sample 4 counts from sample 1 and inherits the gap before sample 2.
    gaps = [False, False, True, False, False, False, True]
    kind = [NORMAL, NORMAL, GLITCH, GLITCH, NORMAL, NORMAL, WRAP]
    assert gaps_since_accepted(gaps, kind).tolist() == [False, False, True, True, True, False, True]


def test_gaps_since_accepted_without_glitches_keeps_gaps():
    gaps = np.array([False, True, False, True])
    assert gaps_since_accepted(gaps, np.full(4, NORMAL, np.int8)).tolist() == gaps.tolist()
    assert gaps_since_accepted([], []).tolist() == []


def test_gaps_since_accepted_rejects_length_mismatch():
    with pytest.raises(ValueError, match="gaps"):
        gaps_since_accepted([False, True], [NORMAL])
