"""Recomputation of a voucher from per-minute records: its evidence root, its day's KPIs and its anchor's baseline.

The cloud runs these on its stored telemetry (:mod:`valuegate.cloud.reproduce`)
and ``valuegate verify`` on the records an auditor bundle carries, so both
reach the same numbers by the same code.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from valuegate.edge import methodology
from valuegate.edge.kernels import kpis, plant_day_windows, totals_from_records
from valuegate.edge.protocol.contract import Anchor
from valuegate.edge.protocol.evidence import merkle_root
from valuegate.edge.protocol.records import MinuteRecord
from valuegate.edge.protocol.voucher import Claims

from .signature import canonical_fast

__all__ = ("record_leaf", "evidence_of", "day_kpis", "baseline_span", "baseline_from_records", "baseline_by_day", "claimed_baseline", "minute_instant")


def record_leaf(record: MinuteRecord) -> bytes:
    """Return the RFC 6962 leaf hash of one record: SHA-256 over 0x00 and the record's RFC 8785 form."""
    return hashlib.sha256(b"\x00" + canonical_fast({name: getattr(record, name) for name in record.__struct_fields__})).digest()


def evidence_of(records: Sequence[MinuteRecord]) -> tuple[str, int]:
    """Return the RFC 6962 root over the canonical records, as ``evidence_digest`` does, and the record count."""
    return merkle_root([record_leaf(record) for record in records]), len(records)


def day_kpis(records: Sequence[MinuteRecord], claims: Claims) -> Any:
    """Return the KPIs of the records, with the ideal cycle times the voucher names for its machines."""
    ideal = {machine.id: machine.ideal_cycle_time_s for machine in claims.machines}
    return kpis(totals_from_records(list(records), ideal_cycle_time_s=ideal))


def minute_instant(minute: str) -> dt.datetime:
    """Parse a record's ``YYYY-MM-DDTHH:MM:00Z`` minute as an aware UTC instant."""
    return dt.datetime.fromisoformat(minute.replace("Z", "+00:00"))


def baseline_span(anchor: Anchor, time_zone: str) -> tuple[dt.datetime, dt.datetime]:
    """Return the UTC instants that bound the anchor's baseline period in the plant's zone."""
    windows = plant_day_windows(time_zone, anchor.baseline.first_date, anchor.baseline.last_date)
    start = dt.datetime.fromtimestamp(int(windows.start_ms[0]) / 1000, dt.UTC)
    end = dt.datetime.fromtimestamp(int(windows.end_ms[-1]) / 1000, dt.UTC)
    return start, end


def baseline_from_records(anchor: Anchor, claims: Claims, records: Sequence[MinuteRecord]) -> methodology.BaselineResult:
    """Measure the anchor's baseline from the records of its baseline period, plant day by plant day.

    Raises :class:`valuegate.edge.methodology.InsufficientBaseline` when the records cover too few days.
    """
    minute_ms = np.array([minute_instant(record.minute).timestamp() * 1000 for record in records], np.int64)

    def between(start: dt.datetime, end: dt.datetime) -> list[MinuteRecord]:
        low, high = start.timestamp() * 1000, end.timestamp() * 1000
        return [records[i] for i in np.flatnonzero((minute_ms >= low) & (minute_ms < high))]

    return baseline_by_day(anchor, claims, between)


def baseline_by_day(anchor: Anchor, claims: Claims, between: Callable[[dt.datetime, dt.datetime], Sequence[MinuteRecord]]) -> methodology.BaselineResult:
    """Measure the anchor's baseline from the records that ``between(start, end)`` gives for each plant day of its baseline period.

    A caller whose records do not fit in memory at once passes a function that reads one day's records.
    Raises :class:`valuegate.edge.methodology.InsufficientBaseline` when the records cover too few days.
    """
    # The gateway values every baseline day at the ideal cycle times the voucher names, whatever was in force when
    # the day closed, so a tag-map change of a cycle time leaves honest vouchers reproducible here.
    windows = plant_day_windows(claims.period.time_zone, anchor.baseline.first_date, anchor.baseline.last_date)
    days = []
    for label, low, high in zip(windows.labels, windows.start_ms, windows.end_ms, strict=True):
        start = dt.datetime.fromtimestamp(int(low) / 1000, dt.UTC)
        end = dt.datetime.fromtimestamp(int(high) / 1000, dt.UTC)
        days.append((label, day_kpis(between(start, end), claims)))
    return methodology.build_baseline(anchor, days)


def claimed_baseline(anchor: Anchor, claims: Claims) -> methodology.BaselineResult:
    """Return the voucher's own baseline as a result with one resample, which gives the point estimate but no interval.

    Used where no baseline-period record is at hand, so that only the delta's point estimate can be compared.
    """
    value = claims.baseline.value if claims.baseline.value is not None else 0.0
    return methodology.BaselineResult(
        anchor=anchor.id, metric=anchor.metric, value=value, days=claims.baseline.days, first_date=claims.baseline.first_date,
        last_date=claims.baseline.last_date, digest=claims.baseline.digest, daily=(), resampled=np.full(1, value),
    )  # fmt: skip
