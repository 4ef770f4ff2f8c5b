"""numba kernels for counters, state intervals, OEE windows and the value delta."""
