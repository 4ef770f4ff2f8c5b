"""Compilation: a fixed set of signatures per kernel whatever the input dtype, cache fallbacks, pure-Python mode, numba regressions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from valuegate.edge import kernels
from valuegate.edge.kernels import compiled_kernels, warm_up
from valuegate.edge.kernels.counters import VALUE_DTYPES

ADAPTER_DTYPES = (np.int16, np.uint16, np.int32, np.uint32, np.float32, np.float64)


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=240, env={**os.environ, **env})


@pytest.mark.skipif(kernels.JIT_DISABLED, reason="NUMBA_DISABLE_JIT=1: kernels run as plain Python and compile nothing")
def test_adapter_dtypes_compile_no_new_signature():
    warm_up()
    before = {name: len(dispatcher.signatures) for name, dispatcher in compiled_kernels().items()}
    counter_kernel = "valuegate.edge.kernels.counters._counter_steps"
    # The counter kernel reads each integer dtype in VALUE_DTYPES uncast; every other kernel has one signature.
    compiled_value_dtypes = {np.dtype(signature[2].dtype.name) for signature in compiled_kernels()[counter_kernel].signatures}
    assert compiled_value_dtypes == {np.dtype(dtype) for dtype in VALUE_DTYPES}
    assert all(count == 1 for name, count in before.items() if name != counter_kernel), before
    for dtype in ADAPTER_DTYPES:
        ts = np.array([0, 1000, 2000], dtype=np.int64 if dtype in (np.float32, np.int16, np.uint16) else dtype)
        reasons = np.array([0, 2, 0] if np.dtype(dtype).kind == "u" else [-1, 2, -1], dtype)
        iv = kernels.state_intervals(ts, np.array([0, 3, 1], dtype), reasons, 3000, start_ms=0)
        kernels.debounce(iv, 500)
        kernels.minute_table(iv, 0, 1, 3)
        steps = kernels.normalize_counter(ts, np.array([1, 2, 3], dtype), bits=16, signed=dtype in (np.int16, np.int32), max_rate_per_min=600)
        kernels.counter_minutes(ts, np.array([1, 2, 3], dtype), 0, 1, bits=32, signed=True, max_rate_per_min=600)
        kernels.bucket_counts(ts, steps.increments, 0, 1)
        minute_end = np.array([60_000], np.int64 if dtype is np.int16 else dtype)
        kernels.window_totals(np.array([0], dtype), np.ones((1, 6), dtype=np.int32), np.array([0], dtype), minute_end)
        kernels.block_bootstrap(np.array([1, 2, 3], dtype), resamples=5, block_len=2, seed=3)
    for dtype in (np.int8, np.uint8, np.int64, np.uint64, np.bool_):
        kernels.counter_minutes(np.array([0, 1000, 2000]), np.array([0, 1, 1], dtype), 0, 1, bits=64, signed=dtype is not np.uint64, max_rate_per_min=600)
    after = {name: len(dispatcher.signatures) for name, dispatcher in compiled_kernels().items()}
    assert after == before


def test_every_kernel_compiles():
    timings = warm_up()
    assert set(timings) == {
        "state_intervals",
        "debounce",
        "minute_table",
        "normalize_counter",
        "bucket_counts",
        "window_totals",
        "apply_planned_stops",
        "block_bootstrap",
    }


def test_unwritable_cache_dir_warns_and_still_computes(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    result = _run(
        """
        import warnings
        warnings.simplefilter("always")
        with warnings.catch_warnings(record=True) as caught:
            from valuegate.edge import kernels
            print(kernels.state_intervals([0], [0], [-1], 10).end_ms.tolist())
        print([str(w.message) for w in caught if "NUMBA_CACHE_DIR" in str(w.message)])
        """,
        NUMBA_CACHE_DIR=str(blocker / "cache"),
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "[10]"
    assert "is not writable" in lines[1]


def test_while_loop_inside_for_loop_compiles():
    """numba 0.65-0.68 crashed compiling this loop shape; the subprocess turns a segfault into a failure."""
    result = _run(
        """
        import numba
        import numpy as np

        @numba.njit(cache=False)
        def split_into_minutes(start, end, out):
            for i in range(start.shape[0]):
                left = start[i]
                while left < end[i]:
                    piece = min(end[i], (left // 60 + 1) * 60)
                    out[left // 60] += piece - left
                    left = piece
            return out

        out = split_into_minutes(np.array([30, 100]), np.array([90, 200]), np.zeros(4, np.int64))
        print(numba.__version__, out.tolist())
        """
    )
    assert result.returncode == 0, f"numba crashed (exit {result.returncode}): {result.stderr[-2000:]}"
    assert result.stdout.split(" ", 1)[1].strip() == "[30, 50, 60, 20]"


_SCENARIO = """
import json
import numpy as np
from valuegate.edge import kernels as k
iv = k.state_intervals([5_000, 0, 65_000, 65_000, 130_000], np.array([3, 0, 1, float("nan"), 0]), [1, -1, -1, -1, -1], 200_000, start_ms=0)
table = k.minute_table(k.debounce(iv, 1_000), 0, 4, 2)
steps = k.normalize_counter([0, 60_000, 120_000], np.array([65_530, 4, 9], np.uint16), bits=16, signed=False, max_rate_per_min=60)
stops = k.Windows(["break"], np.array([100_000]), np.array([110_000]))
marked = k.apply_planned_stops(iv, stops)
print(json.dumps({
    "jit_disabled": k.JIT_DISABLED,
    "intervals": [c.tolist() for c in iv],
    "state_ms": table.state_ms.tolist(),
    "stops": table.stops.tolist(),
    "counter": steps.increments.tolist(),
    "buckets": k.bucket_counts([0, 60_000, 120_000], steps.increments, 0, 3).tolist(),
    "totals": k.window_totals(table.minute_ms, table.state_ms, [0], [120_000]).tolist(),
    "marked": [c.tolist() for c in marked],
    "bootstrap": k.block_bootstrap([1.0, 2.0, 4.0, 8.0], resamples=6, block_len=2, seed=11).tolist(),
}))
"""


def test_pure_python_mode_gives_same_results():
    compiled = _run(_SCENARIO, NUMBA_DISABLE_JIT="0")
    plain = _run(_SCENARIO, NUMBA_DISABLE_JIT="1")
    assert compiled.returncode == 0, compiled.stderr
    assert plain.returncode == 0, plain.stderr
    compiled_result, plain_result = json.loads(compiled.stdout), json.loads(plain.stdout)
    assert compiled_result.pop("jit_disabled") is False
    assert plain_result.pop("jit_disabled") is True
    assert plain_result == compiled_result
    assert compiled_result["counter"] == [0, 10, 5]


def test_kernel_modules_keep_settings_in_one_place():
    folder = Path(kernels.__file__).parent
    for path in folder.glob("*.py"):
        if path.name == "_jit.py":
            continue
        text = path.read_text(encoding="utf-8")
        assert "numba.njit" not in text, f"{path.name} compiles outside _jit.py"
        assert "from numba import" not in text, f"{path.name} imports numba outside _jit.py"
