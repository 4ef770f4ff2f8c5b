"""Half-open integer intervals ``[start, end)``: merging, subtracting and measuring overlaps."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ("merge_intervals", "subtract_intervals", "overlap_ms")

Interval = tuple[int, int]


def merge_intervals(intervals: Iterable[Interval]) -> list[Interval]:
    """Return the union of ``intervals`` as sorted, disjoint intervals; touching ones are joined."""
    merged: list[Interval] = []
    for start, end in sorted(intervals):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def subtract_intervals(base: Iterable[Interval], removed: Iterable[Interval]) -> list[Interval]:
    """Return the parts of ``base`` not covered by ``removed``, sorted and disjoint."""
    cuts = merge_intervals(removed)
    result: list[Interval] = []
    for start, end in merge_intervals(base):
        cursor = start
        for cut_start, cut_end in cuts:
            if cut_end <= cursor or cut_start >= end:
                continue
            if cut_start > cursor:
                result.append((cursor, cut_start))
            cursor = max(cursor, cut_end)
        if cursor < end:
            result.append((cursor, end))
    return result


def overlap_ms(intervals: Iterable[Interval], start: int, end: int) -> int:
    """Return how much of ``[start, end)`` the disjoint ``intervals`` cover."""
    return sum(max(0, min(end, piece_end) - max(start, piece_start)) for piece_start, piece_end in intervals)
