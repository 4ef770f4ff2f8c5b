"""Repeated resend requests: the sign that the cloud rejects a voucher that the agent keeps publishing.

The cloud requests a resend from the first sequence it lacks. One request
fills an ordinary gap. When the same ``from_seq`` comes back again and
again, the cloud rejects what the agent sends (for example a key it does
not accept yet), and everything after that sequence waits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ("RepeatedResend", "ResendWatch")


@dataclass(frozen=True, slots=True)
class RepeatedResend:
    """A sequence the cloud requested at least ``threshold`` times within the window."""

    from_seq: int
    requests: int
    window_s: float

    def as_dict(self) -> dict[str, int | float]:
        return {"from_seq": self.from_seq, "requests": self.requests, "window_s": self.window_s}


class ResendWatch:
    """Counts resend requests per ``from_seq`` over a sliding window, and drops those an ack has passed.

    The publisher records requests on the event loop, and the health
    endpoint reads from its own thread, so a lock guards the counts.
    """

    def __init__(self, *, threshold: int = 3, window_s: float = 600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.window_s = window_s
        self._clock = clock
        self._requests: dict[int, list[float]] = {}
        self._lock = threading.Lock()

    def note(self, from_seq: int) -> RepeatedResend | None:
        """Record one request for ``from_seq``; return the repeat when one reaches the threshold."""
        now = self._clock()
        with self._lock:
            self._requests.setdefault(from_seq, []).append(now)
            # Drop what left the window, so that a long run does not collect stamps.
            for seq in list(self._requests):
                kept = [stamp for stamp in self._requests[seq] if stamp > now - self.window_s]
                if kept:
                    self._requests[seq] = kept
                else:
                    del self._requests[seq]
        return self.repeated()

    def acked(self, through: int) -> None:
        """Forget the requests for sequences up to ``through``, which the cloud has now stored."""
        with self._lock:
            for seq in [seq for seq in self._requests if seq <= through]:
                del self._requests[seq]

    def repeated(self) -> RepeatedResend | None:
        """Return the lowest sequence requested ``threshold`` times or more within the window, or None."""
        oldest = self._clock() - self.window_s
        with self._lock:
            counts = {seq: sum(stamp > oldest for stamp in stamps) for seq, stamps in self._requests.items()}
        for seq in sorted(counts):
            if counts[seq] >= self.threshold:
                return RepeatedResend(seq, counts[seq], self.window_s)
        return None
