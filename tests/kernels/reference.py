"""Slow, obviously correct references for the kernels: millisecond timelines and plain Python integers."""

from __future__ import annotations

import math

import numpy as np

OFFLINE = 5


def timeline_from_samples(ts, state, reason, start, end, max_gap=None):
    """Return per-millisecond (state, reason) arrays over [start, end) by replaying samples in time order.

    With ``max_gap`` a sample's state lasts at most that many milliseconds.
    """
    states = np.full(end - start, OFFLINE, np.int64)
    reasons = np.full(end - start, -1, np.int64)
    samples = sorted(range(len(ts)), key=lambda i: ts[i])  # sorted() is stable: equal times keep input order
    for i in samples:
        s = state[i]
        missing = s is None or (isinstance(s, float) and math.isnan(s)) or s < 0
        offset = max(int(ts[i]) - start, 0)
        if offset >= end - start:
            continue
        states[offset:] = OFFLINE if missing else int(s)
        reasons[offset:] = -1 if missing else int(reason[i])
        if max_gap is not None:
            expiry = max(int(ts[i]) + max_gap - start, 0)
            states[expiry:] = OFFLINE
            reasons[expiry:] = -1
    return states, reasons


def run_length(states, reasons, start):
    """Return [(start, end, state, reason)] runs of a millisecond timeline."""
    runs = []
    for offset in range(len(states)):
        key = (int(states[offset]), int(reasons[offset]))
        if runs and tuple(runs[-1][2:]) == key:
            runs[-1][1] = start + offset + 1
        else:
            runs.append([start + offset, start + offset + 1, *key])
    return [tuple(run) for run in runs]


def timeline_from_intervals(intervals, start, end):
    """Per-millisecond timeline of intervals over [start, end); uncovered time is offline."""
    states = np.full(end - start, OFFLINE, np.int64)
    reasons = np.full(end - start, -1, np.int64)
    for left, right, s, r in intervals:
        a, b = max(left, start), min(right, end)
        if a < b:
            states[a - start : b - start] = s
            reasons[a - start : b - start] = r
    return states, reasons


def debounce(intervals, min_ms):
    out = []
    for left, right, s, r in intervals:
        if out and out[-1][1] == left:
            previous = out[-1]
            if right - left < min_ms and s != OFFLINE and previous[2] != OFFLINE:
                previous[1] = right
                continue
            if (previous[2], previous[3]) == (s, r):
                previous[1] = right
                continue
        out.append([left, right, s, r])
    return [tuple(item) for item in out]


def minute_table(intervals, minute0, n_minutes, n_reasons):
    states, reasons = timeline_from_intervals(intervals, minute0, minute0 + n_minutes * 60_000)
    state_ms = [[0] * 6 for _ in range(n_minutes)]
    reason_ms = [[0] * n_reasons for _ in range(n_minutes)]
    for m in range(n_minutes):
        piece_states = states[m * 60_000 : (m + 1) * 60_000]
        piece_reasons = reasons[m * 60_000 : (m + 1) * 60_000]
        for s in range(6):
            state_ms[m][s] = int(np.count_nonzero(piece_states == s))
        for r in range(n_reasons):
            reason_ms[m][r] = int(np.count_nonzero((piece_states == 3) & (piece_reasons == r)))
    stops = [0] * n_minutes
    for left, _right, s, _r in intervals:
        if s == 3 and minute0 <= left < minute0 + n_minutes * 60_000:
            stops[(left - minute0) // 60_000] += 1
    return state_ms, reason_ms, stops


def counter_steps(ts, raw, bits, signed, max_rate_per_min):
    """Classify counter samples with Python integers and modular arithmetic on the raw values."""
    modulus = 2**bits
    order = sorted(range(len(ts)), key=lambda i: ts[i])
    increments = [0] * len(ts)
    kinds = [0] * len(ts)
    reference = candidate = None

    def classify(previous, current):
        (p_ms, p), (c_ms, c) = previous, current
        budget = max_rate_per_min * (c_ms - p_ms)  # a step is plausible when step x 60000 <= budget
        step = (c - p) % modulus
        if c >= p:
            return (step, 0) if step * 60_000 <= budget else (0, 3)
        if step * 60_000 <= budget:
            return step, 1
        return (c, 2) if 0 <= c and c * 60_000 <= budget else (0, 2)

    for i in order:
        value = raw[i]
        if isinstance(value, float) and math.isnan(value):
            kinds[i] = 3
            continue
        current = (int(ts[i]), int(round(value)))
        if reference is None:
            reference = current
            continue
        increment, kind = classify(reference, current)
        if kind == 3 and candidate is not None:
            follow, follow_kind = classify(candidate, current)
            if follow_kind == 0:
                increment, kind = follow, 0
        if kind == 3:
            candidate = current
            kinds[i] = 3
            continue
        candidate = None
        reference = current
        increments[i], kinds[i] = increment, kind
    return increments, kinds


def xorshift_means(values, resamples, block_len, seed):
    mask = 2**64 - 1
    state = (seed ^ 0x9E3779B97F4A7C15) & mask or 0x9E3779B97F4A7C15

    def step(x):
        x ^= (x << 13) & mask
        x ^= x >> 7
        x ^= (x << 17) & mask
        return x

    n = len(values)
    block_len = min(block_len, n)
    for _ in range(8):
        state = step(state)
    means = []
    for _ in range(resamples):
        picked = []
        while len(picked) < n:
            state = step(state)
            first = state % (n - block_len + 1)
            picked.extend(values[first : first + block_len])
        total = 0.0
        for value in picked[:n]:
            total += value
        means.append(total / n)
    return means
