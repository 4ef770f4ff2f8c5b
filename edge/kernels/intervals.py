"""State run-length intervals from timestamped state samples, debouncing and micro-stop detection."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._jit import helper, kernel
from ._validate import as_int_array, as_state_codes, check_same_length

__all__ = ("STATE_COUNT", "OFFLINE", "UNPLANNED_STOP", "Intervals", "state_intervals", "debounce", "micro_stops", "empty_intervals", "gaps_touching")

# Codes follow valuegate.edge.protocol.records.STATES:
# 0 running, 1 idle, 2 planned_stop, 3 unplanned_stop, 4 changeover, 5 offline.
STATE_COUNT = 6
UNPLANNED_STOP = 3
OFFLINE = 5
NO_DATA = -1


class Intervals(NamedTuple):
    """Half-open state runs ``[start_ms, end_ms)`` in time order; ``reason`` is -1 where none applies."""

    start_ms: NDArray[np.int64]
    end_ms: NDArray[np.int64]
    state: NDArray[np.int8]
    reason: NDArray[np.int32]

    @property
    def duration_ms(self) -> NDArray[np.int64]:
        return self.end_ms - self.start_ms


def empty_intervals() -> Intervals:
    return Intervals(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int8), np.empty(0, np.int32))


# Samples are walked one by one for a while, then skipped a block at a time
# after one vectorized check that they repeat the last state. Blocks double
# while samples repeat. A block with a change sends the kernel back to the
# walk, which doubles while the first check after it keeps failing.
MIN_BLOCK = 64
MAX_BLOCK = 1024
ONE = np.uint64(1)


@helper
def _repeats(ts, state, reason, first, stop, previous_t, raw_state, raw_reason):
    # True when samples [first, stop) are sorted, not older than ``previous_t`` and all
    # repeat ``raw_state`` and ``raw_reason``. Unsigned indices spare numba's
    # negative-index check, so that the loops vectorize.
    changed = 0
    for k in range(np.uint64(first), np.uint64(stop)):
        changed += (state[k] != raw_state) | (reason[k] != raw_reason)
    for k in range(np.uint64(first + 1), np.uint64(stop)):
        changed += ts[k] < ts[k - ONE]
    return changed == 0 and ts[first] >= previous_t


@kernel
def _state_runs(ts, state, reason, start, end, out_start, out_end, out_state, out_reason):
    # A ``state`` of -1 means no data. Returns the number of runs written, or -1
    # at the first sample older than the one before it, so that the caller sorts.
    n = ts.shape[0]
    count = 0
    run_start = start
    run_state = 5
    run_reason = -1

    # The last sample at or before ``start`` sets the state at ``start``.
    i = 0
    while i < n and ts[i] <= start:
        if i > 0 and ts[i] < ts[i - 1]:
            return -1
        if state[i] < 0:
            run_state = 5
            run_reason = -1
        else:
            run_state = state[i]
            run_reason = reason[i]
        i += 1

    previous_t = ts[i - 1] if i > 0 else start
    # Raw state and reason of the last sample: most samples repeat it exactly,
    # so whole blocks that do are skipped and only blocks with a change are walked.
    raw_state = state[i - 1] if i > 0 else np.int8(-2)
    raw_reason = reason[i - 1] if i > 0 else np.int32(-2)
    stop = n
    block_start = i
    walk = MIN_BLOCK  # samples to walk one by one next
    size = 0  # samples to check at once next; 0 while walking
    while block_start < n and stop == n:
        if size > 0:
            block_stop = min(block_start + size, n)
            if _repeats(ts, state, reason, block_start, block_stop, previous_t, raw_state, raw_reason):
                previous_t = ts[block_stop - 1]
                block_start = block_stop
                size = min(2 * size, MAX_BLOCK)
                walk = MIN_BLOCK
            else:
                if size == MIN_BLOCK:
                    walk = min(2 * walk, MAX_BLOCK)  # changes follow each other closely: walk longer
                size = 0
            continue
        block_stop = min(block_start + walk, n)
        size = MIN_BLOCK
        for j in range(block_start, block_stop):
            t = ts[j]
            if t < previous_t:
                return -1
            previous_t = t
            s = state[j]
            r = reason[j]
            if s == raw_state and r == raw_reason:
                continue
            raw_state = s
            raw_reason = r
            if s < 0:
                s = 5
                r = -1
            if s == run_state and r == run_reason:
                continue
            if t >= end:
                stop = j
                break
            if j + 1 < n and ts[j + 1] == t:
                # At equal timestamps the last sample wins. This one does not start
                # a run, so the next sample must not be compared with it.
                raw_state = np.int8(-2)
                continue
            out_start[count] = run_start
            out_end[count] = t
            out_state[count] = run_state
            out_reason[count] = run_reason
            count += 1
            run_start = t
            run_state = s
            run_reason = r
        block_start = block_stop

    # Samples past the end are ignored, but only once the rest is known to be sorted.
    unsorted = 0
    for k in range(np.uint64(stop + 1), np.uint64(n)):
        unsorted += ts[k] < ts[k - ONE]
    if unsorted:
        return -1

    if end > run_start:
        out_start[count] = run_start
        out_end[count] = end
        out_state[count] = run_state
        out_reason[count] = run_reason
        count += 1
    return count


def _expire_stale(ts, codes, reasons, end: int, max_gap_ms: int):
    """Insert a no-data sample ``max_gap_ms`` after every sample that the next one (or ``end``) follows later than that."""
    if ts.shape[0] > 1 and np.any(ts[1:] < ts[:-1]):
        order = np.argsort(ts, kind="stable")
        ts, codes, reasons = ts[order], codes[order], reasons[order]
    following = np.append(ts[1:], max(end, int(ts[-1])) if ts.shape[0] else end)
    stale = np.flatnonzero(following - ts > max_gap_ms)
    if stale.size == 0:
        return ts, codes, reasons
    at = stale + 1
    return (
        np.insert(ts, at, ts[stale] + max_gap_ms),
        np.insert(codes, at, np.int8(-1)),
        np.insert(reasons, at, np.int32(-1)),
    )


def state_intervals(
    ts_ms: ArrayLike, state: ArrayLike, reason: ArrayLike, end_ms: int, *, start_ms: int | None = None, max_gap_ms: int | None = None
) -> Intervals:
    """Turn state samples into run-length intervals covering ``[start_ms, end_ms)``.

    Samples may be unsorted or repeated: they are stably sorted by time and at
    equal timestamps the last one wins. Each sample's state holds until the
    next sample or ``end_ms``, or for at most ``max_gap_ms`` when that is set
    (for polled sources, where a silent gap means lost data). A state of -1
    (NaN in a float array) means no data and becomes ``offline`` with no
    reason, and so does the time between ``start_ms`` and the first sample.
    Without ``start_ms`` the intervals begin at the first sample. Adjacent
    runs of equal state and reason merge.
    """
    ts = as_int_array(ts_ms, "ts_ms")
    codes = as_state_codes(state, "state")
    reasons = as_int_array(reason, "reason", np.int32)
    check_same_length(ts_ms=ts, state=codes, reason=reasons)
    end = int(end_ms)
    if start_ms is None:
        if ts.shape[0] == 0:
            return empty_intervals()
        start = int(ts.min())
    else:
        start = int(start_ms)
    if end < start:
        msg = f"end_ms {end} is before start_ms {start}; pass the window end, which must not precede its start"
        raise ValueError(msg)
    if max_gap_ms is not None:
        if max_gap_ms <= 0:
            raise ValueError(f"max_gap_ms {max_gap_ms} must be a positive duration in ms, or None to hold each state until the next sample")
        ts, codes, reasons = _expire_stale(ts, codes, reasons, end, int(max_gap_ms))

    size = ts.shape[0] + 1
    out = Intervals(np.empty(size, np.int64), np.empty(size, np.int64), np.empty(size, np.int8), np.empty(size, np.int32))
    count = _state_runs(ts, codes, reasons, np.int64(start), np.int64(end), *out)
    if count < 0:
        order = np.argsort(ts, kind="stable")
        count = _state_runs(ts[order], codes[order], reasons[order], np.int64(start), np.int64(end), *out)
    return Intervals(*(column[:count].copy() for column in out))


def _check_intervals(iv: Intervals, name: str = "iv") -> Intervals:
    if not isinstance(iv, tuple) or len(iv) != 4:
        raise TypeError(f"{name} must be an Intervals tuple (start_ms, end_ms, state, reason), got {type(iv).__name__}")
    start = as_int_array(iv[0], f"{name}.start_ms")
    end = as_int_array(iv[1], f"{name}.end_ms")
    state = as_state_codes(iv[2], f"{name}.state")
    reason = as_int_array(iv[3], f"{name}.reason", np.int32)
    check_same_length(**{f"{name}.start_ms": start, f"{name}.end_ms": end, f"{name}.state": state, f"{name}.reason": reason})
    state = np.where(state < 0, np.int8(OFFLINE), state).astype(np.int8)
    bad = np.flatnonzero(end < start)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{name}[{i}] ends ({int(end[i])}) before it starts ({int(start[i])}); intervals must have end_ms >= start_ms")
    overlap = np.flatnonzero(start[1:] < end[:-1])
    if overlap.size:
        i = int(overlap[0]) + 1
        msg = f"{name}[{i}] starts at {int(start[i])}, before {name}[{i - 1}] ends at {int(end[i - 1])}; intervals must be sorted and must not overlap"
        raise ValueError(msg)
    return Intervals(start, end, state, reason)


@kernel
def _debounce(start, end, state, reason, min_ms, out_start, out_end, out_state, out_reason):
    count = 0
    for i in range(start.shape[0]):
        short = end[i] - start[i] < min_ms
        if count > 0:
            last = count - 1
            touching = out_end[last] == start[i]
            # No data never absorbs a run and is never absorbed: offline is a gap, not a toggle.
            if short and touching and state[i] != 5 and out_state[last] != 5:
                out_end[last] = end[i]
                continue
            if touching and state[i] == out_state[last] and reason[i] == out_reason[last]:
                out_end[last] = end[i]
                continue
        out_start[count] = start[i]
        out_end[count] = end[i]
        out_state[count] = state[i]
        out_reason[count] = reason[i]
        count += 1
    return count


def debounce(iv: Intervals, min_ms: int) -> Intervals:
    """Absorb runs shorter than ``min_ms`` into the run before them, then merge equal neighbours.

    The first run is kept whatever its length. ``offline`` runs are neither
    absorbed nor absorb others, so debouncing never turns missing data into a
    state or a state into missing data.
    """
    if min_ms < 0:
        raise ValueError(f"min_ms {min_ms} is negative; pass 0 to keep every run or a positive duration in ms")
    checked = _check_intervals(iv)
    size = len(checked.start_ms)
    out = Intervals(np.empty(size, np.int64), np.empty(size, np.int64), np.empty(size, np.int8), np.empty(size, np.int32))
    count = _debounce(*checked, np.int64(min_ms), *out)
    return Intervals(*(column[:count].copy() for column in out))


def micro_stops(iv: Intervals, threshold_ms: int) -> NDArray[np.bool_]:
    """Flag unplanned stops shorter than ``threshold_ms`` (one bool per interval)."""
    if threshold_ms < 0:
        raise ValueError(f"threshold_ms {threshold_ms} is negative; pass a duration in ms such as 120000 for two minutes")
    checked = _check_intervals(iv)
    return (checked.state == UNPLANNED_STOP) & (checked.end_ms - checked.start_ms < threshold_ms)


def gaps_touching(ts_ms: ArrayLike, iv: Intervals, state: int) -> NDArray[np.bool_]:
    """Return, per sample, whether the time since the sample before it, ``(ts[i-1], ts[i]]``, overlaps a run of ``state``.

    The first sample has no time before it and gets False. Samples must be
    in time order. The edge leaves out a counter increment whose gap touches
    ``offline`` time, because parts made while the state was unknown have no
    run time to be measured against.
    """
    ts = as_int_array(ts_ms, "ts_ms")
    checked = _check_intervals(iv)
    if ts.shape[0] > 1 and (back := np.flatnonzero(ts[1:] < ts[:-1])).size:
        i = int(back[0]) + 1
        raise ValueError(f"ts_ms[{i}] ({int(ts[i])}) is before ts_ms[{i - 1}] ({int(ts[i - 1])}); sort the samples by time first")
    touched = np.zeros(ts.shape[0], np.bool_)
    picked = checked.state == state
    starts, ends = checked.start_ms[picked], checked.end_ms[picked]
    if ts.shape[0] < 2 or starts.size == 0:
        return touched
    # The first run of ``state`` that ends after the gap starts; the gap touches it if that run starts before the gap ends.
    first = np.searchsorted(ends, ts[:-1], side="right")
    inside = first < ends.size
    touched[1:] = inside & (starts[np.minimum(first, ends.size - 1)] < ts[1:])
    return touched
