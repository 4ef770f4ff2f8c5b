"""Samples: one value read from a PLC, with its timestamp, time source and status."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = ("Sample", "Status", "TimeSource")

Status = Literal["good", "uncertain", "bad"]
TimeSource = Literal["plc", "gateway"]


class Sample(msgspec.Struct, frozen=True):
    """One tag value; ``value`` is None when ``status`` is bad, and ``detail`` says why."""

    device: str
    tag: str
    ts_ms: int
    time_source: TimeSource
    received_ms: int
    value: Any
    raw: Any
    status: Status
    detail: str = ""
