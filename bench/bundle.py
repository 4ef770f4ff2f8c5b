"""Benchmark building an auditor bundle with minute records: streamed by chunk against all records in memory.

Run: .venv/bin/python bench/bundle.py [--machines 10] [--days 60]

Each machine gets one synthetic record per minute. The streamed build
writes each machine's records a week at a time, as the cloud fetches them
(:func:`valuegate.cloud.record_export.write_contract_records`, without the
database). The reference first holds every record as a dict, as the cloud
did before, and then builds the same bundle. Each build runs in its own
child process, and the benchmark prints its wall time and peak resident
memory (ru_maxrss), which includes the interpreter and imports. Both ZIP
files must be byte-identical.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator

MINUTE = dt.timedelta(minutes=1)
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
WEEK_MINUTES = 7 * 1440


def records(machine: str, days: int, first: int, count: int) -> list[dict]:
    """Return ``count`` synthetic records of ``machine`` from minute ``first`` on, the same for the same arguments."""
    rows = []
    for index in range(first, min(first + count, days * 1440)):
        running = 30_000 + (index * 7919 + len(machine)) % 30_000
        rows.append({
            "machine": machine, "minute": (START + index * MINUTE).strftime("%Y-%m-%dT%H:%M:00Z"), "running_ms": running,
            "idle_ms": 60_000 - running, "planned_stop_ms": 0, "unplanned_stop_ms": 0, "changeover_ms": 0, "offline_ms": 0,
            "produced": running // 2700, "reject": 1 if index % 97 == 0 else 0, "stops": 0, "reasons": {}, "uncertain_ms": 0,
        })  # fmt: skip
    return rows


def weeks(machine: str, days: int) -> Iterator[list[dict]]:
    for first in range(0, days * 1440, WEEK_MINUTES):
        yield records(machine, days, first, WEEK_MINUTES)


def build(mode: str, machines: int, days: int, out: str) -> None:
    """Build one bundle in this process: ``streamed`` or ``in_memory``."""
    from valuegate.cloud.bundle import build_bundle, record_names, start_bundle
    from valuegate.cloud.signature import canonical_fast

    parts = {"contract": {"id": "c-bench", "tenant": "t"}, "vouchers": [], "keys": [], "documents": [], "created_at": "2026-01-01T00:00:00Z"}
    ids = [f"m-{number:03d}" for number in range(machines)]
    if mode == "streamed":
        writer, manifest = start_bundle(**parts)
        for machine, name in record_names(ids).items():
            with writer.record_file(machine, name) as file:
                for chunk in weeks(machine, days):
                    file.write([canonical_fast(row) for row in chunk])
        data = writer.finish(manifest)
    else:
        every_record = {machine: [row for chunk in weeks(machine, days) for row in chunk] for machine in ids}
        data = build_bundle(records=every_record, **parts)
    with open(out, "wb") as handle:
        handle.write(data)


def run_child(mode: str, machines: int, days: int, out: str) -> tuple[float, float]:
    """Run one build in a child process; return its wall seconds and peak resident memory in MB."""
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, __file__, "--child", mode, "--machines", str(machines), "--days", str(days), "--out", out])
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"{mode} build failed with status {status}")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=10)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--child", choices=("streamed", "in_memory"))
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    if args.child:
        build(args.child, args.machines, args.days, args.out)
        return

    import tempfile

    total = args.machines * args.days * 1440
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"records: {args.machines} machines x {args.days} days = {total:,}")
    with tempfile.TemporaryDirectory() as folder:
        results = {}
        for mode in ("streamed", "in_memory"):
            out = os.path.join(folder, f"{mode}.zip")
            seconds, peak_mb = run_child(mode, args.machines, args.days, out)
            with open(out, "rb") as handle:
                data = handle.read()
            results[mode] = (seconds, peak_mb, hashlib.sha256(data).hexdigest(), len(data))
            print(f"{mode:>9}: {seconds:7.1f} s, peak RSS {peak_mb:8.1f} MB, ZIP {len(data) / 1e6:7.1f} MB ({len(data) / total:.1f} bytes a record)")
        streamed, in_memory = results["streamed"], results["in_memory"]
        if streamed[2] != in_memory[2]:
            raise SystemExit("the two builds gave different ZIP files")
        print("ZIP files identical: yes")
        print(f"peak RSS streamed / in memory: {streamed[1] / in_memory[1]:.2f}; time streamed / in memory: {streamed[0] / in_memory[0]:.2f}")


if __name__ == "__main__":
    main()
