"""Figures computed straight from the shipped recordings' raw files, for tests to compare the product's results with."""

from __future__ import annotations

import csv
import gzip
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

RECORDINGS = Path(__file__).resolve().parent.parent / "simulators" / "recordings"
SAO_PAULO = ZoneInfo("America/Sao_Paulo")


def _csv(name: str) -> list[dict[str, str]]:
    with gzip.open(RECORDINGS / "bottling-line" / f"{name}.csv.gz", "rt", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _local_ms(day: date, fraction: str) -> int:
    start = datetime(day.year, day.month, day.day, tzinfo=SAO_PAULO)
    return round((start + timedelta(milliseconds=round(float(fraction) * 86_400_000))).timestamp() * 1000)


def bottling_window_and_stops(day: date) -> tuple[float, float]:
    """Return (production window minutes, stop minutes inside it) for one day, from the raw CSV files."""
    serial = str((day - date(1899, 12, 30)).days)
    rows = [row for row in _csv("daily_operation_summary") if row["date"] == serial]
    windows = sorted((_local_ms(day, r["production_start_time"]), _local_ms(day, r["production_end_time"])) for r in rows)
    start, end = windows[0][0], max(w[1] for w in windows)
    stops = sorted(
        (max(_local_ms(day, r["downtime_start_time"]), start), min(_local_ms(day, r["downtime_end_time"]), end))
        for r in _csv("downtime_event_log")
        if r["date"] == serial
    )
    covered, reach = 0, start
    for stop_start, stop_end in stops:
        stop_start = max(stop_start, reach)
        if stop_end > stop_start:
            covered += stop_end - stop_start
            reach = stop_end
    return (end - start) / 60_000, covered / 60_000
