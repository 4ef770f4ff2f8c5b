"""Recorded production logs shipped with valuegate, and loaders that turn them into plain data."""

from __future__ import annotations

from .bottling import BOTTLING_ZONE, BottlingDay, BottlingRecording, HourCount, PublishedDay, load_bottling
from .files import Finding, RecordingNotFoundError
from .mtconnect import MTCONNECT_RECORDINGS, MTCONNECT_ZONE, UNAVAILABLE, CounterIncrements, MtconnectRecording, MtEvent, load_mtconnect

__all__ = (
    "BOTTLING_ZONE",
    "BottlingDay",
    "BottlingRecording",
    "HourCount",
    "PublishedDay",
    "load_bottling",
    "Finding",
    "RecordingNotFoundError",
    "MTCONNECT_RECORDINGS",
    "MTCONNECT_ZONE",
    "UNAVAILABLE",
    "CounterIncrements",
    "MtconnectRecording",
    "MtEvent",
    "load_mtconnect",
)
