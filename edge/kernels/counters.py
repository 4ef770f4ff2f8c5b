"""Part-counter normalization: increments between samples across wraps, PLC resets and glitches."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._jit import helper, kernel
from ._validate import _as_array, as_int_array, check_same_length

__all__ = ("NORMAL", "WRAP", "RESET", "GLITCH", "CounterSteps", "CounterMinutes", "normalize_counter", "counter_minutes")

NORMAL = 0
WRAP = 1
RESET = 2
GLITCH = 3


class CounterSteps(NamedTuple):
    """Per sample: the increment since the previous accepted sample and how it was classified."""

    increments: NDArray[np.int64]
    kind: NDArray[np.int8]


@helper
def _classify(previous, previous_ms, current, current_ms, mask, zero, max_rate_per_min):
    # Values are in an ordered int64 domain where ``zero`` is the raw value 0;
    # differences are taken modulo 2**bits through ``mask``.
    # A step is plausible when step x 60000 <= rate x elapsed ms, which avoids a division.
    budget = max_rate_per_min * (current_ms - previous_ms)
    step = (current - previous) & mask
    # With 64 bits a step of 2**63 or more wraps negative: it is never plausible.
    plausible = step >= 0 and step * 60000.0 <= budget
    if current >= previous:
        if plausible:
            return step, 0
        return 0, 3
    if plausible:
        return step, 1
    # A drop that no wrap explains: the PLC restarted its counter. Counts made
    # since the restart are kept only when they fit the rate limit.
    since_restart = current - zero
    if since_restart >= 0 and since_restart * 60000.0 <= budget:
        return since_restart, 2
    return 0, 2


@helper
def _minute_of(t, minute0, n_minutes):
    # Index of the minute holding ``t``, or -1 outside the table.
    if t < minute0:
        return -1
    m = (t - minute0) // 60000
    return m if m < n_minutes else -1


@helper
def _emit(i, increment, kind, t, out_increment, out_kind, minute0, out_minutes, kind_counts):
    if out_increment.shape[0] > 0:
        out_increment[i] = increment
        out_kind[i] = kind
    if increment != 0 and out_minutes.shape[0] > 0:
        m = _minute_of(t, minute0, out_minutes.shape[0])
        if m >= 0:
            out_minutes[m] += increment
    kind_counts[kind] += 1


@helper
def _normal_steps(ts, value, first, reference, reference_ms, mask, max_rate_per_min, out_increment, out_kind, minute0, out_minutes):
    # Tight loop over in-order, valid samples that count normally; returns the
    # index of the first sample that needs the full rules, or ts.shape[0].
    per_sample = out_increment.shape[0] > 0
    n_minutes = out_minutes.shape[0]
    # Sorted samples stay in one minute for a while: sum there, divide only when one leaves it.
    m = -1
    left = np.int64(0)
    right = np.int64(0)
    total = np.int64(0)
    stop = ts.shape[0]
    for i in range(first, ts.shape[0]):
        current = value[i]
        current_ms = ts[i]
        step = (current - reference) & mask
        if current < reference or step < 0 or step * 60000.0 > max_rate_per_min * (current_ms - reference_ms):
            stop = i
            break
        if per_sample:
            out_increment[i] = step
            out_kind[i] = 0
        if n_minutes > 0:
            if current_ms >= right or current_ms < left:
                if m >= 0:
                    out_minutes[m] += total
                total = 0
                m = _minute_of(current_ms, minute0, n_minutes)
                if m >= 0:
                    left = minute0 + m * 60000
                    right = left + 60000
                elif current_ms < minute0:
                    left = current_ms
                    right = minute0
                else:
                    left = minute0 + n_minutes * 60000
                    right = np.iinfo(np.int64).max
            total += step
        reference = current
        reference_ms = current_ms
    if m >= 0:
        out_minutes[m] += total
    return stop, reference, reference_ms


@kernel
def _counter_steps(order, ts, value, valid, mask, zero, max_rate_per_min, out_increment, out_kind, minute0, out_minutes, kind_counts):
    # Fills per-sample outputs when ``out_increment`` is not empty and per-minute
    # sums when ``out_minutes`` is not empty; ``kind_counts`` counts each kind.
    # An empty ``order`` takes samples as given and returns False at the first
    # one older than its predecessor, so that the caller can sort and rerun.
    # An empty ``valid`` means every sample is valid (integer input).
    n = ts.shape[0]
    in_order = order.shape[0] == 0
    all_valid = valid.shape[0] == 0
    have_reference = False
    reference = np.int64(0)
    reference_ms = np.int64(0)
    have_candidate = False
    candidate = np.int64(0)
    candidate_ms = np.int64(0)
    previous_ms = ts[0] if n > 0 else np.int64(0)
    j = 0
    while j < n:
        if in_order and all_valid and have_reference and not have_candidate:
            stop, reference, reference_ms = _normal_steps(
                ts, value, j, reference, reference_ms, mask, max_rate_per_min, out_increment, out_kind, minute0, out_minutes
            )
            kind_counts[0] += stop - j
            j = stop
            if j >= n:
                break
            previous_ms = ts[j - 1] if j > 0 else previous_ms
        i = j
        if not in_order:
            i = order[j]
        j += 1
        current_ms = ts[i]
        if in_order:
            if current_ms < previous_ms:
                return False
            previous_ms = current_ms
        if not all_valid and not valid[i]:
            _emit(i, 0, 3, current_ms, out_increment, out_kind, minute0, out_minutes, kind_counts)
            continue
        current = value[i]
        if not have_reference:
            have_reference = True
            reference = current
            reference_ms = current_ms
            _emit(i, 0, 0, current_ms, out_increment, out_kind, minute0, out_minutes, kind_counts)
            continue

        increment, kind = _classify(reference, reference_ms, current, current_ms, mask, zero, max_rate_per_min)
        if kind == 3 and have_candidate:
            # A jump that the next sample confirms is a new counter level: count on from it.
            follow, follow_kind = _classify(candidate, candidate_ms, current, current_ms, mask, zero, max_rate_per_min)
            if follow_kind == 0:
                increment = follow
                kind = 0
        if kind == 3:
            have_candidate = True
            candidate = current
            candidate_ms = current_ms
            _emit(i, 0, 3, current_ms, out_increment, out_kind, minute0, out_minutes, kind_counts)
            continue
        have_candidate = False
        reference = current
        reference_ms = current_ms
        _emit(i, increment, kind, current_ms, out_increment, out_kind, minute0, out_minutes, kind_counts)
    return True


def _ordered_values(raw: np.ndarray, bits: int, signed: bool) -> tuple[NDArray[np.int64], NDArray[np.bool_], int]:
    """Return the raw counter as ordered int64 values, a validity mask and the value that stands for raw 0."""
    if raw.dtype.kind == "f":
        valid = np.isfinite(raw)
        rounded = np.where(valid, np.rint(raw), 0.0)
    else:
        valid = np.empty(0, np.bool_)  # integers are always valid samples
        rounded = raw
    if signed:
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        low, high = 0, 2**bits - 1
    fits = raw.dtype.kind in "iu" and np.iinfo(raw.dtype).min >= low and np.iinfo(raw.dtype).max <= high
    if rounded.size and not fits:
        outside = (rounded < low) | (rounded > high)
        if valid.shape[0]:
            outside &= valid
        hits = np.flatnonzero(outside)
        if hits.size:
            i = int(hits[0])
            kind = "signed" if signed else "unsigned"
            msg = f"raw[{i}] = {raw[i].item()!r} does not fit a {bits}-bit {kind} counter ({low}..{high}); check the counter's bits and signed settings in the tag map"
            raise ValueError(msg)
    if bits == 64 and not signed:
        # Shift unsigned 64-bit values by 2**63 so that int64 order matches unsigned order.
        as_unsigned = np.asarray(rounded).astype(np.uint64)
        return (as_unsigned ^ np.uint64(1 << 63)).view(np.int64), valid, -(2**63)
    return np.asarray(rounded).astype(np.int64), valid, 0


def _prepare(ts_ms: ArrayLike, raw: ArrayLike, bits: int, signed: bool, max_rate_per_min: float):
    if bits not in (16, 32, 64):
        raise ValueError(f"bits {bits!r} is not a counter width; pass 16, 32 or 64")
    if not max_rate_per_min > 0 or not np.isfinite(max_rate_per_min):
        raise ValueError(f"max_rate_per_min {max_rate_per_min!r} must be a positive finite count per minute")
    ts = as_int_array(ts_ms, "ts_ms")
    raw_array = _as_array(raw, "raw")
    check_same_length(ts_ms=ts, raw=raw_array)
    values, valid, zero = _ordered_values(raw_array, bits, signed)
    mask = np.int64(-1 if bits == 64 else (1 << bits) - 1)
    return ts, values, valid, mask, np.int64(zero), float(max_rate_per_min)


def _run(ts, values, valid, mask, zero, rate, out_increment, out_kind, minute0, out_minutes) -> NDArray[np.int64]:
    kind_counts = np.zeros(4, np.int64)
    with np.errstate(over="ignore"):
        args = (ts, values, valid, mask, zero, rate, out_increment, out_kind, np.int64(minute0), out_minutes, kind_counts)
        if not _counter_steps(np.empty(0, np.int64), *args):
            out_minutes[:] = 0
            kind_counts[:] = 0
            order = np.argsort(ts, kind="stable").astype(np.int64)
            _counter_steps(order, *args)
    return kind_counts


def normalize_counter(ts_ms: ArrayLike, raw: ArrayLike, *, bits: int, signed: bool, max_rate_per_min: float) -> CounterSteps:
    """Classify each counter sample against the previous accepted one and return its increment.

    ``raw`` may hold any integer or float dtype; floats are rounded and NaN
    counts as a rejected sample. Samples are taken in time order (stable for
    equal timestamps) and the result is aligned with the input. Kinds: 0
    normal, 1 wrap at ``bits``, 2 reset (a drop no wrap explains; counts since
    the restart are kept only when they fit the rate), 3 glitch (rejected,
    increment 0). No increment is negative or larger than ``max_rate_per_min``
    times the time since the previous accepted sample.
    """
    ts, values, valid, mask, zero, rate = _prepare(ts_ms, raw, bits, signed, max_rate_per_min)
    increments = np.empty(ts.shape[0], np.int64)
    kinds = np.empty(ts.shape[0], np.int8)
    _run(ts, values, valid, mask, zero, rate, increments, kinds, 0, np.empty(0, np.int64))
    return CounterSteps(increments, kinds)


class CounterMinutes(NamedTuple):
    """Counts per UTC minute and how many samples of each kind (normal, wrap, reset, glitch) were seen."""

    counts: NDArray[np.int64]
    kind_counts: NDArray[np.int64]


def counter_minutes(
    ts_ms: ArrayLike, raw: ArrayLike, minute0_ms: int, n_minutes: int, *, bits: int, signed: bool, max_rate_per_min: float
) -> CounterMinutes:
    """Normalize a counter like :func:`normalize_counter` and sum its increments per UTC minute in one pass.

    Equal to ``bucket_counts(ts_ms, normalize_counter(...).increments, minute0_ms, n_minutes)``
    without the per-sample arrays; the agent uses it on every poll batch.
    """
    if minute0_ms % 60000:
        raise ValueError(f"minute0_ms {minute0_ms} is not on a UTC minute boundary; round it down to a multiple of 60000")
    if n_minutes < 0:
        raise ValueError(f"n_minutes {n_minutes} must not be negative")
    ts, values, valid, mask, zero, rate = _prepare(ts_ms, raw, bits, signed, max_rate_per_min)
    counts = np.zeros(n_minutes, np.int64)
    if n_minutes == 0:
        # An empty table would switch the kernel to per-sample mode; classify into a scratch minute instead.
        scratch = np.zeros(1, np.int64)
        kind_counts = _run(ts, values, valid, mask, zero, rate, np.empty(0, np.int64), np.empty(0, np.int8), -(2**62), scratch)
        return CounterMinutes(counts, kind_counts)
    kind_counts = _run(ts, values, valid, mask, zero, rate, np.empty(0, np.int64), np.empty(0, np.int8), minute0_ms, counts)
    return CounterMinutes(counts, kind_counts)
