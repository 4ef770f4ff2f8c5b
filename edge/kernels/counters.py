"""Part-counter normalization: increments between samples across wraps, PLC resets and glitches."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._jit import helper, kernel
from ._validate import _as_array, as_int_array, check_same_length

__all__ = ("NORMAL", "WRAP", "RESET", "GLITCH", "CounterSteps", "normalize_counter")

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


@kernel
def _counter_steps(order, ts, value, valid, mask, zero, max_rate_per_min, out_increment, out_kind):
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
    for j in range(n):
        i = j
        if not in_order:
            i = order[j]
        current_ms = ts[i]
        if in_order:
            if current_ms < previous_ms:
                return False
            previous_ms = current_ms
        current = value[i]

        # Fast path: a valid sample at or above the reference within the rate limit.
        step = (current - reference) & mask
        if (
            have_reference
            and not have_candidate
            and (all_valid or valid[i])
            and current >= reference
            and step >= 0
            and step * 60000.0 <= max_rate_per_min * (current_ms - reference_ms)
        ):
            out_increment[i] = step
            out_kind[i] = 0
            reference = current
            reference_ms = current_ms
            continue

        if not all_valid and not valid[i]:
            out_increment[i] = 0
            out_kind[i] = 3
            continue
        if not have_reference:
            have_reference = True
            reference = current
            reference_ms = current_ms
            out_increment[i] = 0
            out_kind[i] = 0
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
            out_increment[i] = 0
            out_kind[i] = 3
            continue
        have_candidate = False
        reference = current
        reference_ms = current_ms
        out_increment[i] = increment
        out_kind[i] = kind
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
            msg = f"raw[{i}] = {raw[i].item()!r} does not fit a {kind} {bits}-bit counter ({low}..{high}); check the counter's bits and signed settings in the tag map"
            raise ValueError(msg)
    if bits == 64 and not signed:
        # Shift unsigned 64-bit values by 2**63 so that int64 order matches unsigned order.
        as_unsigned = np.asarray(rounded).astype(np.uint64)
        return (as_unsigned ^ np.uint64(1 << 63)).view(np.int64), valid, -(2**63)
    return np.asarray(rounded).astype(np.int64), valid, 0


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
    if bits not in (16, 32, 64):
        raise ValueError(f"bits {bits!r} is not a counter width; pass 16, 32 or 64")
    if not max_rate_per_min > 0 or not np.isfinite(max_rate_per_min):
        raise ValueError(f"max_rate_per_min {max_rate_per_min!r} must be a positive finite count per minute")
    ts = as_int_array(ts_ms, "ts_ms")
    raw_array = _as_array(raw, "raw")
    check_same_length(ts_ms=ts, raw=raw_array)
    values, valid, zero = _ordered_values(raw_array, bits, signed)

    mask = np.int64(-1 if bits == 64 else (1 << bits) - 1)
    increments = np.empty(ts.shape[0], np.int64)
    kinds = np.empty(ts.shape[0], np.int8)
    rate = float(max_rate_per_min)
    with np.errstate(over="ignore"):
        if not _counter_steps(np.empty(0, np.int64), ts, values, valid, mask, np.int64(zero), rate, increments, kinds):
            order = np.argsort(ts, kind="stable").astype(np.int64)
            _counter_steps(order, ts, values, valid, mask, np.int64(zero), rate, increments, kinds)
    return CounterSteps(increments, kinds)
