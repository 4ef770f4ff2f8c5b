"""numba compile settings shared by every kernel: caching, fastmath and parallel choices live here."""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable
from typing import Any

import numba

__all__ = ("CACHE", "FASTMATH", "PARALLEL", "JIT_DISABLED", "kernel", "helper", "shared_helper", "cache_dir_problem", "compiled_kernels")

# Float sums must come out bit-identical on the edge and in the cloud, which
# recompute the same vouchers; fastmath would let LLVM reorder them.
FASTMATH = False
# Edge boxes have 1-4 cores and the agent already runs one machine per task,
# so kernels stay single-threaded. They release the GIL so that threads overlap.
PARALLEL = False
NOGIL = True
JIT_DISABLED = bool(numba.config.DISABLE_JIT)

_KERNELS: dict[str, Any] = {}


def cache_dir_problem() -> str | None:
    """Return why ``NUMBA_CACHE_DIR`` cannot hold compiled kernels, or None when it can (or is unset)."""
    path = os.environ.get("NUMBA_CACHE_DIR")
    if not path:
        return None
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as exc:
        return f"NUMBA_CACHE_DIR={path!r} is not writable ({exc.strerror or exc})"
    return None


def _cache_setting() -> bool:
    problem = cache_dir_problem()
    if problem is None:
        return True
    warnings.warn(
        f"{problem}; the kernels compile at every start instead of loading from the cache. "
        "Point NUMBA_CACHE_DIR at a writable folder to keep compiled kernels between starts.",
        RuntimeWarning,
        stacklevel=3,
    )
    return False


CACHE = _cache_setting()


def _compile(func: Callable[..., Any], **extra: Any) -> Any:
    options = {"cache": CACHE, "fastmath": FASTMATH, "parallel": PARALLEL, "nogil": NOGIL, **extra}
    try:
        dispatcher = numba.njit(**options)(func)
    except RuntimeError as exc:
        # numba raises when no cache locator is writable (read-only install, no home folder).
        warnings.warn(f"cannot cache kernel {func.__name__}: {exc}; it compiles at every start", RuntimeWarning, stacklevel=2)
        dispatcher = numba.njit(**{**options, "cache": False})(func)
    return dispatcher


def kernel(func: Callable[..., Any]) -> Any:
    """Compile ``func`` lazily with the shared settings and register it as an entry point for warm-up checks."""
    dispatcher = _compile(func)
    _KERNELS[f"{func.__module__}.{func.__name__}"] = dispatcher
    return dispatcher


def helper(func: Callable[..., Any]) -> Any:
    """Compile ``func`` as a kernel called only from other kernels; numba inlines it into each caller."""
    return _compile(func, inline="always")


def shared_helper(func: Callable[..., Any]) -> Any:
    """Compile ``func`` as a kernel called only from other kernels, out of line.

    It compiles once per argument types, however many signatures its callers
    are compiled for, which keeps the warm-up of a many-signature kernel short.
    """
    return _compile(func)


def compiled_kernels() -> dict[str, Any]:
    """Return every registered kernel dispatcher by qualified name (plain functions under NUMBA_DISABLE_JIT)."""
    return dict(_KERNELS)
