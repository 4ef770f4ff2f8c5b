"""Repeated resend requests: the sign that the cloud rejects a voucher that the agent keeps publishing.

The cloud requests a resend from the first sequence it lacks, at most
every ``resend_interval_s`` (5 s by default) while the gap lasts. An
outage of an ingest worker or of the broker also leaves a gap until it
recovers, and then the cloud requests the same ``from_seq`` a few times
within seconds. Only a request that keeps coming back over minutes means
that the cloud rejects what the agent sends (for example a key it does
not accept yet), with everything after that sequence waiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ("RepeatedResend", "ResendWatch")


@dataclass(frozen=True, slots=True)
class RepeatedResend:
    """A sequence the cloud requested at least ``threshold`` times within the window, over at least ``min_span_s``."""

    from_seq: int
    requests: int
    window_s: float
    span_s: float
    """Seconds from the first to the latest request counted."""

    def as_dict(self) -> dict[str, int | float]:
        return {"from_seq": self.from_seq, "requests": self.requests, "window_s": self.window_s, "span_s": round(self.span_s, 1)}


class ResendWatch:
    """Counts resend requests per ``from_seq`` over a sliding window, and drops those an ack has passed.

    A sequence counts as repeated when it was requested ``threshold`` times
    within ``window_s`` and those requests span ``min_span_s`` or more. The
    span is longer than a restart of an ingest worker or the broker usually
    lasts (an estimate: tens of seconds), so such an outage does not look
    like a rejection.
    The publisher records requests on the event loop, and the health
    endpoint reads from its own thread, so a lock guards the counts.
    """

    def __init__(
        self, *, threshold: int = 3, window_s: float = 600.0, min_span_s: float = 300.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if min_span_s >= window_s:
            raise ValueError(f"min_span_s {min_span_s} must be below window_s {window_s}, or no repeat could ever be reported")
        self.threshold = threshold
        self.window_s = window_s
        self.min_span_s = min_span_s
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
        """Return the lowest sequence requested ``threshold`` times or more within the window over ``min_span_s``, or None."""
        oldest = self._clock() - self.window_s
        with self._lock:
            recent = {seq: [stamp for stamp in stamps if stamp > oldest] for seq, stamps in self._requests.items()}
        for seq in sorted(recent):
            stamps = recent[seq]
            if len(stamps) < self.threshold:
                continue
            span = stamps[-1] - stamps[0]
            if span >= self.min_span_s:
                return RepeatedResend(seq, len(stamps), self.window_s, span)
        return None
