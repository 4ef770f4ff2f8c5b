"""Compile every kernel (or load it from the numba cache) before the first real call."""

from __future__ import annotations

import time

import numpy as np

from . import bootstrap, counters, intervals, minutes, windows
from ._jit import compiled_kernels

__all__ = ("warm_up",)


def warm_up() -> dict[str, float]:
    """Run each public kernel once on a tiny input and return the seconds each step took.

    Call it at agent start-up: with a warm cache it loads machine code in well
    under a second; otherwise it compiles, which takes several seconds once.
    """
    seconds: dict[str, float] = {}

    def step(name: str, call) -> object:
        started = time.perf_counter()
        result = call()
        seconds[name] = time.perf_counter() - started
        return result

    ts = np.array([0, 30_000, 60_000], np.int64)
    iv = step("state_intervals", lambda: intervals.state_intervals(ts, np.array([0, 3, 1], np.int8), np.array([-1, 0, -1], np.int32), 120_000, start_ms=0))
    step("debounce", lambda: intervals.debounce(iv, 1000))
    step("minute_table", lambda: minutes.minute_table(iv, 0, 2, 1))
    # One compiled signature per counter dtype that reaches the kernel uncast.
    steps = step(
        "normalize_counter",
        lambda: [counters.normalize_counter(ts, np.array([1, 2, 3], dtype), bits=16, signed=False, max_rate_per_min=60.0) for dtype in counters.VALUE_DTYPES][-1],
    )
    step("bucket_counts", lambda: minutes.bucket_counts(ts, steps.increments, 0, 2))
    step("window_totals", lambda: minutes.window_totals(np.array([0, 60_000], np.int64), np.ones((2, 6), np.int64), np.array([0]), np.array([120_000])))
    stops = windows.Windows(["break"], np.array([10_000], np.int64), np.array([20_000], np.int64))
    step("apply_planned_stops", lambda: windows.apply_planned_stops(iv, stops))
    step("block_bootstrap", lambda: bootstrap.block_bootstrap(np.array([1.0, 2.0, 3.0]), resamples=4, block_len=2, seed=1))
    missing = [name for name, dispatcher in compiled_kernels().items() if getattr(dispatcher, "signatures", [None]) == []]
    if missing:
        raise RuntimeError(f"warm_up left kernels uncompiled: {', '.join(missing)}; add a call for each to warm_up()")
    return seconds
