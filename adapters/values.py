"""Turn raw PLC values into samples: scaling, engineering range and status."""

from __future__ import annotations

import datetime
import enum
import math
import time
from typing import Any

from .samples import Sample, Status, TimeSource

__all__ = (
    "IMPLAUSIBLE_TIME",
    "PLAUSIBLE_TIME_MS",
    "implausible_time",
    "make_sample",
    "now_ms",
    "plain_value",
    "scaled",
)

# A PLC time (a tag with role `clock` or `state_since`, or named in the tag map's `time:` section)
# is UTC epoch milliseconds in [2000-01-01T00:00:00Z, 2100-01-01T00:00:00Z). A value outside
# this range is not a real instant: usually a wrong byte or word order in the tag map, or a
# clock counting seconds or a time since PLC power-on instead of ms since 1970.
PLAUSIBLE_TIME_MS = (946_684_800_000, 4_102_444_800_000)
# Prefix of a bad sample's detail when its PLC time is outside PLAUSIBLE_TIME_MS. The rest of the detail names the value.
IMPLAUSIBLE_TIME = "implausible_time"


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


def implausible_time(value: Any, *, what: str = "value") -> str | None:
    """Return a bad sample's detail when ``value`` is not a plausible PLC time, or None when it is.

    ``value`` must be a number of UTC epoch milliseconds inside
    :data:`PLAUSIBLE_TIME_MS`; ``what`` names it in the detail.
    """
    low, high = PLAUSIBLE_TIME_MS
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or (isinstance(value, float) and not math.isfinite(value)):
        return f"{IMPLAUSIBLE_TIME}: {what} {value!r} is not a number of epoch milliseconds; check the tag's data type"
    if low <= value < high:
        return None
    printed = int(value) if isinstance(value, float) and value.is_integer() else value
    first, end = (datetime.datetime.fromtimestamp(bound / 1000, datetime.timezone.utc).date() for bound in PLAUSIBLE_TIME_MS)
    return (
        f"{IMPLAUSIBLE_TIME}: {what} {printed} ms is not a time between {first} and {end} UTC; "
        "check the tag's byte/word order (`order:`) and that the PLC counts milliseconds since 1970"
    )


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
    plc_time: bool = False,
) -> Sample:
    """Build a sample; a number outside ``value_range`` becomes bad (``out_of_range``), NaN or inf too (``not_finite``).

    With ``plc_time`` the value is a PLC time, and a value that
    :func:`implausible_time` rejects becomes bad with that detail.
    """
    if status != "bad" and plc_time:
        time_problem = implausible_time(value)
        if time_problem is not None:
            return Sample(device, tag, ts_ms, time_source, received_ms, None, raw, "bad", time_problem)
    if status != "bad" and isinstance(value, float) and not math.isfinite(value):
        return Sample(device, tag, ts_ms, time_source, received_ms, None, raw, "bad", "not_finite")
    if status != "bad" and value_range is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        low, high = value_range
        if not low <= value <= high:
            return Sample(device, tag, ts_ms, time_source, received_ms, None, raw, "bad", "out_of_range")
    if status == "bad":
        value = None
    return Sample(device, tag, ts_ms, time_source, received_ms, value, raw, status, detail)
