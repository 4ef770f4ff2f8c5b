"""Jittered exponential backoff for reconnect loops, and a check that keeps them cancellable."""

from __future__ import annotations

import asyncio
import random

__all__ = ("Backoff", "raise_if_cancelling")


class Backoff:
    """Delays for successive reconnect attempts: doubling from ``initial_s`` up to ``max_s``, with jitter.

    Each delay is drawn uniformly from [delay/2, delay] (equal jitter), so that
    many gateways restarted together do not reconnect in lock step.
    """

    def __init__(self, initial_s: float, max_s: float, *, rng: random.Random | None = None) -> None:
        if initial_s <= 0 or max_s < initial_s:
            raise ValueError(f"backoff needs 0 < initial_s <= max_s, got initial_s={initial_s}, max_s={max_s}")
        self.initial_s = initial_s
        self.max_s = max_s
        self._rng = rng or random.Random()
        self._next_s = initial_s

    def next_delay(self) -> float:
        """Return the next delay in seconds and double the one after it, up to the cap."""
        delay = self._next_s
        self._next_s = min(self._next_s * 2, self.max_s)
        return self._rng.uniform(delay / 2, delay)

    def reset(self) -> None:
        """Start again from the initial delay after a successful connection."""
        self._next_s = self.initial_s


def raise_if_cancelling() -> None:
    """Raise CancelledError when the current task has a pending cancellation request.

    On Python 3.11, ``asyncio.wait_for`` returns the result instead of raising
    when a cancellation arrives just as the awaited response does, and both
    client libraries await responses through it. A loop that calls this after
    each request stops as asked instead of polling on after a cancel.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
