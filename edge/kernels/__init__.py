"""numba kernels for counters, state intervals, OEE windows and the value delta.

Kernels are private ``@njit`` functions on arrays and scalars; the public
functions here validate and cast their inputs to one dtype per argument, so
that each kernel compiles once (or loads from the numba cache) at start-up
through :func:`warm_up` and never again while the agent polls.
"""

from __future__ import annotations

from ._jit import JIT_DISABLED, compiled_kernels
from .bootstrap import block_bootstrap, percentile_interval
from .calendar import CALENDAR_SCHEMA, ShiftCalendar, load_calendar, parse_calendar
from .counters import GLITCH, NORMAL, RESET, WRAP, CounterMinutes, CounterSteps, counter_minutes, gaps_since_accepted, normalize_counter
from .intervals import OFFLINE, STATE_COUNT, UNPLANNED_STOP, Intervals, debounce, empty_intervals, gaps_touching, micro_stops, state_intervals
from .kpi import Kpis, Totals, ideal_us_per_item, kpis, totals_from_columns, totals_from_records
from .minutes import MINUTE_MS, MinuteTable, bucket_counts, minute_table, window_totals
from .warmup import warm_up
from .windows import Windows, apply_planned_stops, calendar_stops, plant_day_windows, shift_windows

__all__ = (
    "STATE_COUNT",
    "OFFLINE",
    "UNPLANNED_STOP",
    "MINUTE_MS",
    "NORMAL",
    "WRAP",
    "RESET",
    "GLITCH",
    "JIT_DISABLED",
    "Intervals",
    "state_intervals",
    "empty_intervals",
    "debounce",
    "micro_stops",
    "gaps_touching",
    "gaps_since_accepted",
    "MinuteTable",
    "minute_table",
    "CounterSteps",
    "normalize_counter",
    "CounterMinutes",
    "counter_minutes",
    "bucket_counts",
    "Windows",
    "plant_day_windows",
    "shift_windows",
    "calendar_stops",
    "apply_planned_stops",
    "window_totals",
    "CALENDAR_SCHEMA",
    "ShiftCalendar",
    "load_calendar",
    "parse_calendar",
    "Totals",
    "totals_from_records",
    "totals_from_columns",
    "ideal_us_per_item",
    "Kpis",
    "kpis",
    "block_bootstrap",
    "percentile_interval",
    "warm_up",
    "compiled_kernels",
)
