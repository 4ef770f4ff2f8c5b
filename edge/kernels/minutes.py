"""Per-minute tables: state and reason milliseconds, stop starts and counts per UTC minute, and window sums."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._jit import kernel
from ._validate import as_int_array, check_same_length
from .intervals import STATE_COUNT, Intervals, _check_intervals

__all__ = ("MINUTE_MS", "MinuteTable", "minute_table", "bucket_counts", "window_totals")

MINUTE_MS = 60_000


class MinuteTable(NamedTuple):
    """Per UTC minute: ms in each state, unplanned-stop ms by reason index, and unplanned stops begun."""

    minute_ms: NDArray[np.int64]
    state_ms: NDArray[np.int64]
    reason_ms: NDArray[np.int64]
    stops: NDArray[np.int32]


@kernel
def _fill_minutes(start, end, state, reason, minute0, n_minutes, state_ms, reason_ms, stops):
    table_end = minute0 + n_minutes * 60000
    n_reasons = reason_ms.shape[1]
    for i in range(start.shape[0]):
        s = state[i]
        r = reason[i]
        if s == 3 and minute0 <= start[i] < table_end:
            stops[(start[i] - minute0) // 60000] += 1
        left = max(start[i], minute0)
        right = min(end[i], table_end)
        if left >= right:
            continue
        m = (left - minute0) // 60000
        while left < right:
            edge = minute0 + (m + 1) * 60000
            piece_end = min(edge, right)
            state_ms[m, s] += piece_end - left
            if s == 3 and 0 <= r < n_reasons:
                reason_ms[m, r] += piece_end - left
            left = piece_end
            m += 1

    # Time that no interval covers is missing data: it counts as offline.
    for m in range(n_minutes):
        covered = 0
        for c in range(6):
            covered += state_ms[m, c]
        state_ms[m, 5] += 60000 - covered


def minute_table(iv: Intervals, minute0_ms: int, n_minutes: int, n_reasons: int) -> MinuteTable:
    """Split state intervals into ``n_minutes`` UTC minutes starting at ``minute0_ms``.

    Reason ``r`` of an unplanned stop goes to ``reason_ms[:, r]`` when
    ``0 <= r < n_reasons``; unplanned time without a reason (-1) appears only
    in ``state_ms``. Time no interval covers counts as offline, so every row
    of ``state_ms`` sums to 60,000.
    """
    if minute0_ms % MINUTE_MS:
        raise ValueError(f"minute0_ms {minute0_ms} is not on a UTC minute boundary; round it down to a multiple of 60000")
    if n_minutes < 0 or n_reasons < 0:
        raise ValueError(f"n_minutes ({n_minutes}) and n_reasons ({n_reasons}) must not be negative")
    checked = _check_intervals(iv)
    unplanned_reasons = checked.reason[checked.state == 3]
    too_large = np.flatnonzero(unplanned_reasons >= n_reasons)
    if too_large.size:
        value = int(unplanned_reasons[too_large[0]])
        raise ValueError(f"reason index {value} of an unplanned stop is not below n_reasons={n_reasons}; size the reason table to cover every index")
    state_ms = np.zeros((n_minutes, STATE_COUNT), np.int64)
    reason_ms = np.zeros((n_minutes, n_reasons), np.int64)
    stops = np.zeros(n_minutes, np.int32)
    _fill_minutes(*checked, np.int64(minute0_ms), np.int64(n_minutes), state_ms, reason_ms, stops)
    minutes = np.int64(minute0_ms) + np.arange(n_minutes, dtype=np.int64) * MINUTE_MS
    return MinuteTable(minutes, state_ms, reason_ms, stops)


@kernel
def _bucket(ts, increments, minute0, n_minutes, out):
    # Sorted samples stay in one minute for a while: divide only when one leaves it.
    table_end = minute0 + n_minutes * 60000
    m = 0
    left = minute0
    right = minute0
    for i in range(ts.shape[0]):
        t = ts[i]
        if t < left or t >= right:
            if t < minute0 or t >= table_end:
                continue
            m = (t - minute0) // 60000
            left = minute0 + m * 60000
            right = left + 60000
        out[m] += increments[i]


def bucket_counts(ts_ms: ArrayLike, increments: ArrayLike, minute0_ms: int, n_minutes: int) -> NDArray[np.int64]:
    """Sum counter increments into the UTC minute of the sample that observed them; others are dropped."""
    if minute0_ms % MINUTE_MS:
        raise ValueError(f"minute0_ms {minute0_ms} is not on a UTC minute boundary; round it down to a multiple of 60000")
    if n_minutes < 0:
        raise ValueError(f"n_minutes {n_minutes} must not be negative")
    ts = as_int_array(ts_ms, "ts_ms")
    steps = as_int_array(increments, "increments")
    check_same_length(ts_ms=ts, increments=steps)
    out = np.zeros(n_minutes, np.int64)
    _bucket(ts, steps, np.int64(minute0_ms), np.int64(n_minutes), out)
    return out


@kernel
def _window_sums(minute_ms, columns, start, end, out):
    for w in range(start.shape[0]):
        lo = np.searchsorted(minute_ms, start[w])
        hi = np.searchsorted(minute_ms, end[w])
        for row in range(lo, hi):
            for c in range(columns.shape[1]):
                out[w, c] += columns[row, c]


def window_totals(minute_ms: ArrayLike, columns: ArrayLike, start_ms: ArrayLike, end_ms: ArrayLike) -> NDArray[np.int64]:
    """Sum the rows whose minute start lies in ``[start_ms[w], end_ms[w])``, for every window ``w``."""
    minutes = as_int_array(minute_ms, "minute_ms")
    table = np.asarray(columns)
    if table.ndim == 1:
        table = table[:, None]
    if table.ndim != 2 or table.shape[0] != minutes.shape[0]:
        raise ValueError(f"columns must have shape ({minutes.shape[0]}, c) to match minute_ms, got {np.asarray(columns).shape}")
    if table.dtype.kind not in "iub":
        raise TypeError(f"columns has dtype {table.dtype}; pass integer milliseconds or counts")
    table = np.ascontiguousarray(table, dtype=np.int64)
    if minutes.size and np.any(np.diff(minutes) <= 0):
        i = int(np.flatnonzero(np.diff(minutes) <= 0)[0]) + 1
        raise ValueError(f"minute_ms[{i}] = {int(minutes[i])} does not follow minute_ms[{i - 1}] = {int(minutes[i - 1])}; sort the minutes and drop duplicates")
    starts = as_int_array(start_ms, "start_ms")
    ends = as_int_array(end_ms, "end_ms")
    check_same_length(start_ms=starts, end_ms=ends)
    out = np.zeros((starts.shape[0], table.shape[1]), np.int64)
    _window_sums(minutes, table, starts, ends, out)
    return out
