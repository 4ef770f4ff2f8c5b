"""Per-minute machine records: the telemetry the cloud stores and vouchers commit to.

A record holds, for one machine and one UTC minute, the milliseconds spent in
each OEE state category, the counts made, and unplanned downtime by reason.
All fields are integers so that every JSON implementation encodes a record
to the same canonical bytes.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = (
    "RECORD_SCHEMA",
    "TELEMETRY_SCHEMA",
    "STATES",
    "STATE_CODES",
    "MinuteRecord",
    "TelemetryBatch",
    "minute_iso",
)

RECORD_SCHEMA = "valuegate/minute/v1"
TELEMETRY_SCHEMA = "valuegate/telemetry/v1"

StateName = Literal["running", "idle", "planned_stop", "unplanned_stop", "changeover", "offline"]
# The order is part of the protocol: kernels index state columns by these codes.
STATES: tuple[StateName, ...] = ("running", "idle", "planned_stop", "unplanned_stop", "changeover", "offline")
STATE_CODES: dict[str, int] = {name: code for code, name in enumerate(STATES)}


class MinuteRecord(msgspec.Struct, forbid_unknown_fields=True):
    """One machine-minute; ``minute`` is its UTC start as ``YYYY-MM-DDTHH:MM:00Z``."""

    machine: str
    minute: str
    running_ms: int
    idle_ms: int
    planned_stop_ms: int
    unplanned_stop_ms: int
    changeover_ms: int
    offline_ms: int
    produced: int
    reject: int
    stops: int
    reasons: dict[str, int]
    uncertain_ms: int


class TelemetryBatch(msgspec.Struct, forbid_unknown_fields=True):
    """One telemetry message: per-minute records of one gateway, in time order per machine."""

    schema: str
    tenant: str
    site: str
    gateway: str
    records: list[MinuteRecord]
    time_zones: dict[str, str] = {}
    """IANA time zone of each machine's plant days; machines not named use the site's zone."""


def minute_iso(epoch_ms: int) -> str:
    """Format a minute start given in epoch milliseconds as ``YYYY-MM-DDTHH:MM:00Z``."""
    import datetime as _dt

    stamp = _dt.datetime.fromtimestamp(epoch_ms // 60_000 * 60, tz=_dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:00Z")
