"""Block bootstrap: identical to a plain-integer xorshift reference, seeded and stable."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from valuegate.edge.kernels import block_bootstrap, percentile_interval

from . import reference


@settings(derandomize=True, max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=40),
    st.integers(1, 50),
    st.integers(1, 10),
    st.integers(0, 2**64 - 1),
)
def test_bootstrap_matches_reference(values, resamples, block_len, seed):
    got = block_bootstrap(np.array(values), resamples=resamples, block_len=block_len, seed=seed)
    assert got.tolist() == reference.xorshift_means(values, resamples, block_len, seed)


def test_bootstrap_is_seeded():
    values = np.arange(30, dtype=np.float64)
    first = block_bootstrap(values, resamples=200, block_len=3, seed=7)
    assert np.array_equal(first, block_bootstrap(values, resamples=200, block_len=3, seed=7))
    assert not np.array_equal(first, block_bootstrap(values, resamples=200, block_len=3, seed=8))


def test_bootstrap_of_constant_series_is_constant():
    assert block_bootstrap(np.full(9, 2.5), resamples=10, block_len=4, seed=1).tolist() == [2.5] * 10


def test_bootstrap_single_value():
    assert block_bootstrap([4.0], resamples=3, block_len=3, seed=0).tolist() == [4.0, 4.0, 4.0]


def test_bootstrap_rejects_nan_and_empty():
    with pytest.raises(ValueError, match=r"values\[1\] = nan is not a finite number"):
        block_bootstrap([1.0, float("nan")], resamples=3, block_len=1, seed=0)
    with pytest.raises(ValueError, match="values is empty"):
        block_bootstrap([], resamples=3, block_len=1, seed=0)


def test_percentile_interval_linear():
    low, high = percentile_interval(np.arange(101, dtype=np.float64), 0.9)
    assert (low, high) == (5.0, 95.0)
