"""Input checks and dtype casts shared by the kernel wrappers; errors name the array, index and value."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ("as_int_array", "as_state_codes", "as_float_array", "check_same_length")

# Every dtype an adapter can emit; anything else (object, str, complex) is rejected.
_ACCEPTED = ("int8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "uint8", "float32", "float64", "bool")


def _as_array(values: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.dtype.name not in _ACCEPTED:
        raise TypeError(f"{name} has dtype {array.dtype}; pass integers or floats ({', '.join(_ACCEPTED)})")
    return array


def _first_bad(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else None


def as_int_array(values: ArrayLike, name: str, dtype: type = np.int64) -> NDArray:
    """Cast ``values`` to ``dtype``; floats must be finite whole numbers and everything must fit the type."""
    array = _as_array(values, name)
    if array.dtype == dtype:
        return np.ascontiguousarray(array)
    info = np.iinfo(dtype)
    if array.dtype.kind == "f":
        bad = _first_bad(~np.isfinite(array) | (np.floor(array) != array))
        if bad is not None:
            raise ValueError(f"{name}[{bad}] = {array[bad].item()!r} is not a whole number; pass integer values")
    if array.size and array.dtype.kind in "fiu":
        low, high = array.min(), array.max()
        if low < info.min or high > info.max:
            bad = _first_bad((array < info.min) | (array > info.max))
            raise ValueError(f"{name}[{bad}] = {array[bad].item()!r} is outside the {np.dtype(dtype).name} range {info.min}..{info.max}")
    return np.ascontiguousarray(array, dtype=dtype)


def as_state_codes(values: ArrayLike, name: str) -> NDArray[np.int8]:
    """Cast state codes to int8; NaN becomes -1 (no data); anything outside -1..5 is rejected."""
    array = _as_array(values, name)
    if array.dtype.kind == "f":
        array = np.where(np.isnan(array), -1.0, array)
        bad = _first_bad(~np.isfinite(array) | (np.floor(array) != array))
        if bad is not None:
            raise ValueError(f"{name}[{bad}] = {array[bad].item()!r} is not a state code; pass 0..5 (see records.STATES) or -1/NaN for no data")
    if array.size and (array.min() < -1 or array.max() > 5):
        bad = _first_bad((array < -1) | (array > 5))
        if bad is not None:
            raise ValueError(f"{name}[{bad}] = {array[bad].item()!r} is not a state code; pass 0..5 (see records.STATES) or -1/NaN for no data")
    return np.ascontiguousarray(array, dtype=np.int8)


def as_float_array(values: ArrayLike, name: str) -> NDArray[np.float64]:
    """Cast ``values`` to float64; NaN and infinities are rejected."""
    array = _as_array(values, name)
    array = np.ascontiguousarray(array, dtype=np.float64)
    bad = _first_bad(~np.isfinite(array))
    if bad is not None:
        raise ValueError(f"{name}[{bad}] = {array[bad].item()!r} is not a finite number; drop or fill missing values first")
    return array


def check_same_length(**arrays: np.ndarray) -> None:
    """Raise when the named arrays differ in length, listing each length."""
    lengths = {name: int(array.shape[0]) for name, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{name}={length}" for name, length in lengths.items())
        raise ValueError(f"arrays must have the same length: {shown}")
