"""Benchmark the OEE kernels on 1 Hz machine traces against pandas and a plain numpy scan.

Run: .venv/bin/python bench/kernels.py [--machines 100] [--days 30] [--pandas-machines 3]

Every machine gets 1 Hz state, reason and 16-bit counter samples. One pass
computes per-day KPIs the way the agent does (state intervals, minute table,
counter normalization into minutes, day windows, KPIs). pandas computes the same KPIs the
way a data engineer would. It runs on fewer machines because it is slow, so
the two are compared per sample. The numpy reference sums every column once: the
memory-bandwidth bound of any pass over the same arrays.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

from valuegate.edge import kernels

DAY_MS = 86_400_000
START = dt.date(2024, 3, 1)
TIME_ZONE = "Europe/Berlin"
IDEAL_CYCLE_S = 2.5
N_REASONS = 8


def make_machine(seed: int, days: int) -> dict[str, np.ndarray]:
    """Return one machine's 1 Hz samples: runs of states lasting seconds to an hour, a wrapping counter."""
    rng = np.random.default_rng(seed)
    start_ms = round(dt.datetime.combine(START, dt.time(), dt.UTC).timestamp() * 1000)
    n = days * 86_400
    ts = start_ms + np.arange(n, dtype=np.int64) * 1000 + rng.integers(0, 50, n)
    runs = rng.integers(5, 3600, n // 300)
    run_states = rng.choice(np.arange(6, dtype=np.int8), runs.shape[0], p=[0.6, 0.1, 0.1, 0.12, 0.05, 0.03])
    run_reasons = np.where(run_states == 3, rng.integers(0, N_REASONS, runs.shape[0]), -1)
    state = np.repeat(run_states, runs)[:n]
    state = np.pad(state, (0, n - state.shape[0]), constant_values=0).astype(np.int8)
    reason = np.repeat(run_reasons, runs)[:n]
    reason = np.pad(reason, (0, n - reason.shape[0]), constant_values=-1).astype(np.int32)
    made = (state == 0) & (rng.random(n) < 0.35)
    counter = (np.cumsum(made) % 65_536).astype(np.uint16)
    return {"ts": ts, "state": state, "reason": reason, "counter": counter}


def ours(machine: dict[str, np.ndarray], days: kernels.Windows) -> list[kernels.Kpis]:
    start, end = int(days.start_ms[0]), int(days.end_ms[-1])
    iv = kernels.state_intervals(machine["ts"], machine["state"], machine["reason"], end, start_ms=start)
    n_minutes = (end - start) // kernels.MINUTE_MS
    table = kernels.minute_table(iv, start, n_minutes, N_REASONS)
    produced = kernels.counter_minutes(machine["ts"], machine["counter"], start, n_minutes, bits=16, signed=False, max_rate_per_min=120).counts
    state_ms, reason_ms, stops, produced_per_day = (
        kernels.window_totals(table.minute_ms, columns, days.start_ms, days.end_ms) for columns in (table.state_ms, table.reason_ms, table.stops, produced)
    )
    result = []
    for day in range(len(days.labels)):
        totals = kernels.totals_from_columns(
            state_ms[day],
            produced=produced_per_day[day, 0],
            stops=stops[day, 0],
            reasons={str(r): reason_ms[day, r] for r in range(N_REASONS)},
            ideal_cycle_time_s=IDEAL_CYCLE_S,
        )
        result.append(kernels.kpis(totals))
    return result


def with_pandas(machine: dict[str, np.ndarray], days: kernels.Windows) -> list[dict[str, float]]:
    """Compute the same per-day KPIs with pandas, as a data engineer would write them."""
    import pandas as pd

    end = int(days.end_ms[-1])
    frame = pd.DataFrame(machine)
    frame["time"] = pd.to_datetime(frame["ts"], unit="ms", utc=True)
    frame["next"] = frame["time"].shift(-1).fillna(pd.Timestamp(end, unit="ms", tz="UTC"))
    frame["day"] = frame["time"].dt.tz_convert(TIME_ZONE).dt.date
    frame["ms"] = (frame["next"] - frame["time"]).dt.total_seconds() * 1000
    step = frame["counter"].astype("int64").diff().fillna(0)
    frame["made"] = step.where(step >= 0, step + 65_536)
    frame["stop_start"] = (frame["state"] == 3) & (frame["state"].shift() != 3)
    by_state = frame.pivot_table(index="day", columns="state", values="ms", aggfunc="sum", fill_value=0)
    by_day = frame.groupby("day").agg(produced=("made", "sum"), stops=("stop_start", "sum"))
    reasons = frame[frame["state"] == 3].groupby(["day", "reason"])["ms"].sum().unstack(fill_value=0)
    result = []
    for day, row in by_state.iterrows():
        running = row.get(0, 0)
        planned = running + row.get(1, 0) + row.get(3, 0) + row.get(4, 0)
        availability = running / planned if planned else None
        effectiveness = by_day.loc[day, "produced"] * IDEAL_CYCLE_S * 1000 / running if running else None
        downtime = reasons.loc[day].sort_values(ascending=False) if day in reasons.index else None
        result.append({"day": day, "availability": availability, "effectiveness": effectiveness, "pareto": None if downtime is None else downtime.index[0]})
    return result


def disagreement(ours_days: list[kernels.Kpis], pandas_days: list[dict[str, float]], labels: list[str]) -> float:
    """Return the largest per-day availability or effectiveness difference; raise when a day or Pareto leader differs.

    pandas also reports the trace's last hour, which falls on the plant day
    after the windows. It gives a sample's whole interval to the day it
    starts in, the kernels split it at midnight, so ratios may differ by a
    second's share.
    """
    by_day = {str(day["day"]): day for day in pandas_days}
    missing = [label for label in labels if label not in by_day]
    if missing:
        raise SystemExit(f"pandas has no result for the plant days {missing}")
    worst = 0.0
    for index, (mine, label) in enumerate(zip(ours_days, labels, strict=True)):
        theirs = by_day[label]
        for name in ("availability", "effectiveness"):
            a, b = getattr(mine, name), theirs[name]
            if (a is None) != (b is None):
                raise SystemExit(f"day {index}: {name} is {a} from the kernels, {b} from pandas")
            if a is not None:
                worst = max(worst, abs(a - b))
        leader = next(iter(mine.downtime_by_reason), None)
        if theirs["pareto"] is not None and leader != str(theirs["pareto"]):
            raise SystemExit(f"day {index}: Pareto leader {leader} from the kernels, {theirs['pareto']} from pandas")
    return worst


def numpy_scan(machine: dict[str, np.ndarray]) -> int:
    return int(sum(int(column.sum()) for column in machine.values()))


def cold_start() -> tuple[float, float]:
    """Return seconds to import and warm up the kernels in a fresh process: first with an empty cache, then from it."""
    code = "import time; t = time.perf_counter(); from valuegate.edge import kernels; kernels.warm_up(); print(time.perf_counter() - t)"
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "NUMBA_CACHE_DIR": folder}
        compile_s = float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout)
        cached_s = float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout)
    return compile_s, cached_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=100)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--pandas-machines", type=int, default=3, help="machines run through pandas (it takes seconds per machine-month)")
    args = parser.parse_args()

    kernels.warm_up()
    days = kernels.plant_day_windows(TIME_ZONE, START, START + dt.timedelta(days=args.days - 1))
    ours_s = numpy_s = pandas_s = worst = 0.0
    samples = pandas_samples = 0
    for index in range(args.machines):
        machine = make_machine(index, args.days)
        samples += machine["ts"].shape[0]
        started = time.perf_counter()
        numpy_scan(machine)
        numpy_s += time.perf_counter() - started
        started = time.perf_counter()
        mine = ours(machine, days)
        ours_s += time.perf_counter() - started
        if index < args.pandas_machines:
            started = time.perf_counter()
            theirs = with_pandas(machine, days)
            pandas_s += time.perf_counter() - started
            worst = max(worst, disagreement(mine, theirs, [str(label) for label in days.labels]))
            pandas_samples += machine["ts"].shape[0]

    ours_rate = samples / ours_s
    numpy_rate = samples / numpy_s
    compile_s, cached_s = cold_start()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}")
    print(f"trace: {args.machines} machines x {args.days} days x 1 Hz = {samples:,} samples")
    print(f"kernels: {ours_s:.2f} s, {ours_rate / 1e6:.1f} M samples/s")
    if pandas_samples:
        import pandas as pd

        pandas_rate = pandas_samples / pandas_s
        print(f"pandas {pd.__version__}: {pandas_s:.2f} s for {args.pandas_machines} machines, {pandas_rate / 1e6:.2f} M samples/s; kernels are {ours_rate / pandas_rate:.0f}x faster (target >= 50x)")
        print(f"results: same days and Pareto leaders as pandas, availability and effectiveness within {worst:.1e}")
        if worst > 1e-4:
            raise SystemExit(f"the kernels and pandas disagree by {worst} on a day's ratio; a fast path is wrong")
    print(f"numpy column sums: {numpy_s:.2f} s, {numpy_rate / 1e6:.1f} M samples/s; kernels reach {ours_rate / numpy_rate:.0%} of it (target >= 30%)")
    print(f"cold start (import + warm_up): {compile_s:.2f} s compiling into an empty cache, {cached_s:.2f} s loading from the cache")


if __name__ == "__main__":
    main()
