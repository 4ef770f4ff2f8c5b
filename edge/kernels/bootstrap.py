"""Seeded moving-block bootstrap of a series mean, with a portable xorshift64 generator."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._jit import helper, kernel
from ._validate import as_float_array

__all__ = ("block_bootstrap", "xorshift_state", "percentile_interval")

# Seeds are mixed with the 64-bit golden ratio, and the kernel discards the
# first 8 outputs, so that small seeds do not start in a low-entropy state.
_GOLDEN = 0x9E3779B97F4A7C15


def xorshift_state(seed: int) -> int:
    """Return the generator state for ``seed`` (a non-negative integer below 2**64)."""
    state = (seed ^ _GOLDEN) & 0xFFFFFFFFFFFFFFFF
    return state or _GOLDEN


@helper
def _next(state):
    # Marsaglia's xorshift64 (shifts 13, 7, 17); uint64 arithmetic throughout.
    state ^= state << np.uint64(13)
    state ^= state >> np.uint64(7)
    state ^= state << np.uint64(17)
    return state


@kernel
def _resample_means(values, resamples, block_len, state, out):
    n = values.shape[0]
    starts = np.uint64(n - block_len + 1)
    blocks = (n + block_len - 1) // block_len
    for _ in range(8):
        state = _next(state)
    for b in range(resamples):
        total = 0.0
        filled = 0
        for _block in range(blocks):
            state = _next(state)
            first = np.int64(state % starts)
            for j in range(block_len):
                if filled < n:
                    total += values[first + j]
                    filled += 1
        out[b] = total / n


def block_bootstrap(values: ArrayLike, *, resamples: int, block_len: int, seed: int) -> NDArray[np.float64]:
    """Return the means of ``resamples`` moving-block resamples of ``values``.

    Each resample joins ``ceil(n / block_len)`` blocks of ``block_len``
    consecutive values (block starts drawn uniformly from ``0..n-block_len``
    by xorshift64 seeded with ``seed``), cut to ``n`` values. Blocks keep
    day-to-day correlation. A block longer than the series shrinks to its
    length. The same inputs give the same means on every platform.
    """
    series = as_float_array(values, "values")
    if resamples < 1:
        raise ValueError(f"resamples {resamples} must be at least 1")
    if block_len < 1:
        raise ValueError(f"block_len {block_len} must be at least 1")
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed {seed} must be a non-negative integer below 2**64")
    out = np.empty(resamples, np.float64)
    if series.shape[0] == 0:
        raise ValueError("values is empty; a bootstrap needs at least one value")
    length = min(block_len, series.shape[0])
    _resample_means(series, np.int64(resamples), np.int64(length), np.uint64(xorshift_state(seed)), out)
    return out


def _quantile(ordered: NDArray[np.float64], share: Fraction) -> float:
    position = (ordered.shape[0] - 1) * share
    below = math.floor(position)
    weight = float(position - below)
    if weight == 0:
        return float(ordered[below])
    return float(ordered[below] + weight * (ordered[below + 1] - ordered[below]))


def percentile_interval(samples: ArrayLike, confidence: float) -> tuple[float, float]:
    """Return the equal-tailed ``confidence`` interval of ``samples``.

    Quantile ``p`` of ``n`` sorted values sits at position ``h = (n - 1) p``
    (Hyndman-Fan type 7, numpy's default), interpolated linearly between the
    neighbours; ``h`` is computed exactly from the decimal ``confidence`` so
    that 0.95 of 2,000 values lands on positions 49.975 and 1949.025.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence {confidence} must lie between 0 and 1, for example 0.95")
    ordered = np.sort(as_float_array(samples, "samples"))
    if ordered.shape[0] == 0:
        raise ValueError("samples is empty; an interval needs at least one value")
    tail = (1 - Fraction(str(confidence))) / 2
    return _quantile(ordered, tail), _quantile(ordered, 1 - tail)
