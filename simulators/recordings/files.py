"""Access to the recorded production logs shipped, gzip-compressed, inside this package."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from importlib import resources
from importlib.abc import Traversable
from zoneinfo import ZoneInfo

__all__ = (
    "RecordingNotFoundError",
    "Finding",
    "finding",
    "open_text",
    "recording_file",
    "plant_day_bounds_ms",
    "plant_date_of_ms",
    "epoch_ms",
)

# A data-quality finding of a recording: {"date": "YYYY-MM-DD", "kind": ..., "detail": ...}.
Finding = dict[str, str]


class RecordingNotFoundError(LookupError):
    """A shipped recording file is missing from the installed package."""

    def __init__(self, folder: str, name: str) -> None:
        self.folder = folder
        self.name = name
        super().__init__(
            f"recording file {folder}/{name}.gz is not in the installed valuegate.simulators package; "
            "reinstall valuegate (pip install valuegate) so that its package data is present"
        )


def recording_file(folder: str, name: str) -> Traversable:
    """Return the shipped compressed file ``folder/name.gz``."""
    path = resources.files("valuegate.simulators.recordings").joinpath(folder, name + ".gz")
    if not path.is_file():
        raise RecordingNotFoundError(folder, name)
    return path


def open_text(folder: str, name: str) -> Iterator[str]:
    """Yield the lines of a shipped recording file, decompressed and decoded as UTF-8."""
    with recording_file(folder, name).open("rb") as raw, gzip.open(raw) as unpacked:
        yield from io.TextIOWrapper(unpacked, encoding="utf-8", newline="")


def finding(day: date | None, kind: str, detail: str) -> Finding:
    """Build one data-quality finding; ``day`` is the plant date it concerns."""
    return {"date": day.isoformat() if day is not None else "", "kind": kind, "detail": detail}


def plant_day_bounds_ms(day: date, zone: ZoneInfo) -> tuple[int, int]:
    """Return the UTC epoch milliseconds at which plant day ``day`` starts and ends in ``zone``."""
    start = datetime(day.year, day.month, day.day, tzinfo=zone)
    following = day + timedelta(days=1)
    end = datetime(following.year, following.month, following.day, tzinfo=zone)
    return epoch_ms(start), epoch_ms(end)


def plant_date_of_ms(instant_ms: int, zone: ZoneInfo) -> date:
    """Return the plant date in ``zone`` of a UTC epoch-millisecond instant."""
    return datetime.fromtimestamp(instant_ms // 1000, tz=zone).date()


def epoch_ms(moment: datetime) -> int:
    """Return the UTC epoch milliseconds of an aware datetime, truncated to the millisecond."""
    delta = moment - datetime(1970, 1, 1, tzinfo=ZoneInfo("UTC"))
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000
