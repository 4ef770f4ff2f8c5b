"""Turn raw PLC values into samples: scaling, engineering range and status."""

from __future__ import annotations

import datetime
import enum
import math
import time
from typing import Any

from .samples import Sample, Status, TimeSource

__all__ = ("now_ms", "scaled", "make_sample", "plain_value")


def now_ms() -> int:
    """Return the gateway clock as UTC epoch milliseconds."""
    return time.time_ns() // 1_000_000


def scaled(raw: Any, scale: float, offset: float) -> Any:
    """Return ``raw * scale + offset``; integers stay integers when the scaling is the identity."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return raw
    if scale == 1.0 and offset == 0.0:
        return raw
    return raw * scale + offset


def plain_value(value: Any) -> Any:
    """Convert an OPC UA value to plain JSON-friendly Python: datetimes become epoch ms, enums ints."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return int(value.timestamp() * 1000)
    if isinstance(value, enum.Enum):
        return int(value.value) if isinstance(value.value, int) else str(value.value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return [plain_value(item) for item in value]
    text = getattr(value, "Text", None)  # LocalizedText
    if text is not None and hasattr(value, "Locale"):
        return text
    return value


def make_sample(
    device: str,
    tag: str,
    *,
    ts_ms: int,
    time_source: TimeSource,
    received_ms: int,
    raw: Any,
    value: Any,
    status: Status,
    detail: str = "",
    value_range: list[float] | None = None,
) -> Sample:
    """Build a sample; a number outside ``value_range`` becomes bad (``out_of_range``), NaN or inf too (``not_finite``)."""
    if status != "bad" and isinstance(value, float) and not math.isfinite(value):
        return Sample(device, tag, ts_ms, time_source, received_ms, None, raw, "bad", "not_finite")
    if status != "bad" and value_range is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        low, high = value_range
        if not low <= value <= high:
            return Sample(device, tag, ts_ms, time_source, received_ms, None, raw, "bad", "out_of_range")
    if status == "bad":
        value = None
    return Sample(device, tag, ts_ms, time_source, received_ms, value, raw, status, detail)
