"""Part-counter normalization: increments between samples across wraps, PLC resets and glitches."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._jit import helper, kernel, shared_helper
from ._validate import _as_array, as_int_array, check_same_length

__all__ = ("NORMAL", "WRAP", "RESET", "GLITCH", "CounterSteps", "CounterMinutes", "normalize_counter", "counter_minutes", "gaps_since_accepted")

NORMAL = 0
WRAP = 1
RESET = 2
GLITCH = 3


class CounterSteps(NamedTuple):
    """Per sample: the increment since the previous accepted sample and how it was classified."""

    increments: NDArray[np.int64]
    kind: NDArray[np.int8]


@shared_helper
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


@shared_helper
def _minute_of(t, minute0, n_minutes):
    # Index of the minute holding ``t``, or -1 outside the table.
    if t < minute0:
        return -1
    m = (t - minute0) // 60000
    return m if m < n_minutes else -1


@shared_helper
def _emit(i, increment, kind, t, out_increment, out_kind, minute0, out_minutes, kind_counts):
    if out_increment.shape[0] > 0:
        out_increment[i] = increment
        out_kind[i] = kind
    if increment != 0 and out_minutes.shape[0] > 0:
        m = _minute_of(t, minute0, out_minutes.shape[0])
        if m >= 0:
            out_minutes[m] += increment
    kind_counts[kind] += 1


# Integer dtypes that adapters emit and the counter kernel reads uncast, which
# saves a pass and an int64 copy. Unsigned ones arrive viewed as the signed
# dtype of their width, so the kernel is compiled (in warm_up) for
# VALUE_DTYPES only, and ``raw_mask`` restores their value.
_SIGNED_VIEW = {np.dtype(np.int16): (np.int16, -1), np.dtype(np.uint16): (np.int16, 0xFFFF), np.dtype(np.int32): (np.int32, -1), np.dtype(np.uint32): (np.int32, 0xFFFFFFFF), np.dtype(np.int64): (np.int64, -1)}
VALUE_DTYPES = (np.int16, np.int32, np.int64)

# The fast path checks samples one by one for a while, then a block at a
# time with one vectorized check. Blocks double while samples count normally.
# A block with an odd sample sends the kernel back to checking one by one,
# for longer each time the first block check after it fails.
MIN_BLOCK = 16
MAX_BLOCK = 1024
ONE = np.uint64(1)


@helper
def _at(value, i, raw_mask):
    # Sample ``i`` as int64; ``raw_mask`` zero-extends an unsigned value read through a signed view.
    return np.int64(value[i]) & raw_mask


@helper
def _counts_normally(ts, value, raw_mask, valid, first, stop, mask, max_rate_per_min):
    # True when every sample in (first, stop) counts normally from the sample
    # before it. Unsigned indices spare numba's negative-index check, so that the loops vectorize.
    odd = 0
    for k in range(np.uint64(first + 1), np.uint64(stop)):
        previous = _at(value, k - ONE, raw_mask)
        current = _at(value, k, raw_mask)
        step = (current - previous) & mask
        odd += (current < previous) | (step < 0) | (step * 60000.0 > max_rate_per_min * (ts[k] - ts[k - ONE]))
    if valid.shape[0] > 0:
        for k in range(np.uint64(first + 1), np.uint64(stop)):
            odd += not valid[k]
    return odd == 0


@helper
def _first_odd(ts, value, raw_mask, valid, first, stop, mask, max_rate_per_min):
    # Index of the first sample in (first, stop) that does not count normally from the sample before it, or ``stop``.
    for k in range(first + 1, stop):
        previous = _at(value, k - 1, raw_mask)
        current = _at(value, k, raw_mask)
        step = (current - previous) & mask
        if (valid.shape[0] > 0 and not valid[k]) or current < previous or step < 0:
            return k
        if step * 60000.0 > max_rate_per_min * (ts[k] - ts[k - 1]):
            return k
    return stop


@shared_helper
def _first_not_before(ts, low, high, t):
    # First index in [low, high) of sorted ``ts`` whose time is not before ``t``, or ``high``.
    while low < high:
        middle = (low + high) >> 1
        if ts[middle] < t:
            low = middle + 1
        else:
            high = middle
    return low


@shared_helper
def _minute_end(t, minute0, n_minutes):
    # The minute holding ``t`` (-1 outside the table) and the time where its stretch ends.
    if t < minute0:
        return -1, minute0
    m = (t - minute0) // 60000
    if m < n_minutes:
        return m, minute0 + (m + 1) * 60000
    return -1, np.iinfo(np.int64).max


@helper
def _normal_steps(ts, value, raw_mask, valid, first, reference, reference_ms, mask, max_rate_per_min, out_increment, out_kind, minute0, out_minutes, walk):
    # Fast path over in-order samples that count normally. Returns the index of
    # the first sample that needs the full rules (or ts.shape[0]), the last
    # accepted sample and how far to check one by one on the next call.
    n = ts.shape[0]
    n_minutes = out_minutes.shape[0]
    per_sample = out_increment.shape[0] > 0
    current = _at(value, first, raw_mask)
    step = (current - reference) & mask
    if valid.shape[0] > 0 and not valid[first]:
        return first, reference, reference_ms, walk
    if current < reference or step < 0 or step * 60000.0 > max_rate_per_min * (ts[first] - reference_ms):
        return first, reference, reference_ms, walk
    if per_sample:
        out_increment[first] = step
        out_kind[first] = 0

    # Along normal steps the increments telescope: a minute's count is its last
    # accepted value minus ``base``, the last accepted value before the minute.
    m = -1
    right = np.iinfo(np.int64).min
    base = reference
    start = first
    stop = first + 1
    size = 0  # samples to check at once next; 0 while checking one by one
    searching = True
    while True:
        # Samples [start, stop) are accepted and sorted: bisect for each minute end among them.
        k = start
        while n_minutes > 0 and k < stop:
            t = ts[k]
            if t >= right:
                last = reference if k == first else _at(value, k - 1, raw_mask)
                if m >= 0:
                    out_minutes[m] += last - base
                base = last
                m, right = _minute_end(t, minute0, n_minutes)
            if ts[stop - 1] < right:
                k = stop  # the rest is in this minute, or past the table
            else:
                k = _first_not_before(ts, k, stop, right)
        if not searching or stop == n:
            break

        start = stop
        if size == 0:
            block_stop = min(stop + walk, n)
            stop = _first_odd(ts, value, raw_mask, valid, stop - 1, block_stop, mask, max_rate_per_min)
            searching = stop == block_stop
            size = MIN_BLOCK
        else:
            block_stop = min(stop + size, n)
            if _counts_normally(ts, value, raw_mask, valid, stop - 1, block_stop, mask, max_rate_per_min):
                stop = block_stop
                size = min(2 * size, MAX_BLOCK)
                walk = MIN_BLOCK
            else:
                if size == MIN_BLOCK:
                    walk = min(2 * walk, MAX_BLOCK)  # odd samples follow each other closely: check one by one for longer
                size = 0
        if per_sample:
            for k in range(start, stop):
                out_increment[k] = (_at(value, k, raw_mask) - _at(value, k - 1, raw_mask)) & mask
                out_kind[k] = 0
    last = _at(value, stop - 1, raw_mask)
    if m >= 0:
        out_minutes[m] += last - base
    return stop, last, ts[stop - 1], walk


@kernel
def _counter_steps(order, ts, value, raw_mask, valid, mask, zero, max_rate_per_min, out_increment, out_kind, minute0, out_minutes, kind_counts):
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
    walk = MIN_BLOCK
    j = 0
    while j < n:
        if in_order and have_reference and not have_candidate:
            stop, reference, reference_ms, walk = _normal_steps(
                ts, value, raw_mask, valid, j, reference, reference_ms, mask, max_rate_per_min, out_increment, out_kind, minute0, out_minutes, walk
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
        current = _at(value, i, raw_mask)
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


def _ordered_values(raw: np.ndarray, bits: int, signed: bool) -> tuple[np.ndarray, np.int64, NDArray[np.bool_], np.int64]:
    """Return the counter as integers whose order is the counter's, their ``raw_mask``, a validity mask and the value of raw 0.

    The validity mask is empty when every sample is valid. Integers of an
    adapter dtype pass through uncast (see ``_SIGNED_VIEW``); the rest become int64.
    """
    if signed:
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        low, high = 0, 2**bits - 1
    valid = np.empty(0, np.bool_)
    if raw.dtype.kind == "f":
        values = np.rint(raw)
        finite = np.isfinite(values)
        if not finite.all():
            valid = finite
            values[~finite] = 0.0
    else:
        values = raw
    fits = raw.dtype.kind in "iu" and np.iinfo(raw.dtype).min >= low and np.iinfo(raw.dtype).max <= high
    # min and max first: they scan without the temporaries that locating a bad value needs.
    if values.size and not fits and (values.min() < low or values.max() > high):
        i = int(np.flatnonzero((values < low) | (values > high))[0])
        kind = "signed" if signed else "unsigned"
        msg = f"raw[{i}] = {raw[i].item()!r} does not fit a {bits}-bit {kind} counter ({low}..{high}); check the counter's bits and signed settings in the tag map"
        raise ValueError(msg)
    if bits == 64 and not signed:
        # Shift unsigned 64-bit values by 2**63 so that int64 order matches unsigned order.
        as_unsigned = values.astype(np.uint64)
        return (as_unsigned ^ np.uint64(1 << 63)).view(np.int64), np.int64(-1), valid, np.int64(-(2**63))
    if values.dtype in _SIGNED_VIEW:
        view, raw_mask = _SIGNED_VIEW[values.dtype]
        return np.ascontiguousarray(values).view(view), np.int64(raw_mask), valid, np.int64(0)
    return values.astype(np.int64), np.int64(-1), valid, np.int64(0)


def _prepare(ts_ms: ArrayLike, raw: ArrayLike, bits: int, signed: bool, max_rate_per_min: float) -> tuple[NDArray[np.int64], tuple]:
    """Return the validated timestamps and the counter arguments of ``_counter_steps`` that follow them."""
    if bits not in (16, 32, 64):
        raise ValueError(f"bits {bits!r} is not a counter width; pass 16, 32 or 64")
    if not max_rate_per_min > 0 or not np.isfinite(max_rate_per_min):
        raise ValueError(f"max_rate_per_min {max_rate_per_min!r} must be a positive finite count per minute")
    ts = as_int_array(ts_ms, "ts_ms")
    raw_array = _as_array(raw, "raw")
    check_same_length(ts_ms=ts, raw=raw_array)
    values, raw_mask, valid, zero = _ordered_values(raw_array, bits, signed)
    mask = np.int64(-1 if bits == 64 else (1 << bits) - 1)
    return ts, (values, raw_mask, valid, mask, zero, float(max_rate_per_min))


def _run(ts, counter, out_increment, out_kind, minute0, out_minutes) -> NDArray[np.int64]:
    kind_counts = np.zeros(4, np.int64)
    with np.errstate(over="ignore"):
        outputs = (out_increment, out_kind, np.int64(minute0), out_minutes, kind_counts)
        if not _counter_steps(np.empty(0, np.int64), ts, *counter, *outputs):
            out_minutes[:] = 0
            kind_counts[:] = 0
            order = np.argsort(ts, kind="stable").astype(np.int64)
            _counter_steps(order, ts, *counter, *outputs)
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
    ts, counter = _prepare(ts_ms, raw, bits, signed, max_rate_per_min)
    increments = np.empty(ts.shape[0], np.int64)
    kinds = np.empty(ts.shape[0], np.int8)
    _run(ts, counter, increments, kinds, 0, np.empty(0, np.int64))
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
    ts, counter = _prepare(ts_ms, raw, bits, signed, max_rate_per_min)
    counts = np.zeros(n_minutes, np.int64)
    if n_minutes == 0:
        # An empty table would switch the kernel to per-sample mode; classify into a scratch minute instead.
        scratch = np.zeros(1, np.int64)
        kind_counts = _run(ts, counter, np.empty(0, np.int64), np.empty(0, np.int8), -(2**62), scratch)
        return CounterMinutes(counts, kind_counts)
    kind_counts = _run(ts, counter, np.empty(0, np.int64), np.empty(0, np.int8), minute0_ms, counts)
    return CounterMinutes(counts, kind_counts)


def gaps_since_accepted(gaps: ArrayLike, kind: ArrayLike) -> NDArray[np.bool_]:
    """Return, per sample, whether a gap lies between it and the last accepted sample before it.

    ``gaps[i]`` marks the time since sample ``i - 1`` only (as
    :func:`valuegate.edge.kernels.gaps_touching` returns it) and ``kind`` is
    :attr:`CounterSteps.kind`. A sample after a glitch counts from the last
    accepted sample, so every gap back to that sample applies to it too.
    """
    marked = np.asarray(gaps, np.bool_)
    accepted = np.asarray(kind) != GLITCH
    check_same_length(gaps=marked, kind=accepted)
    if marked.shape[0] == 0:
        return marked.copy()
    index = np.arange(marked.shape[0])
    # The last accepted sample before each one; the first sample is its own reference.
    before = np.maximum.accumulate(np.where(accepted, index, 0))
    reference = np.concatenate(([0], before[:-1]))
    passed = np.cumsum(marked)
    return passed - passed[reference] > 0
