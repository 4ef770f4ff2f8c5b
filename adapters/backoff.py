"""Jittered exponential backoff for reconnect loops."""

from __future__ import annotations

import random

__all__ = ("Backoff",)


class Backoff:
    """Delays for successive reconnect attempts: doubling from ``initial_s`` up to ``max_s``, with full jitter.

    Each delay is drawn uniformly from [delay/2, delay], so that many gateways
    restarted together do not reconnect in lock step.
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
