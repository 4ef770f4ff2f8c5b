"""Jittered exponential backoff for reconnect loops, the warnings of their failed retries, and a cancel check."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ("Backoff", "RepeatLimiter", "RetryLog", "raise_if_cancelling", "sleep_unless_cancelled")


class Backoff:
    """Delays for successive reconnect attempts: doubling from ``initial_s`` up to ``max_s``, with jitter.

    Each delay is drawn uniformly from [delay/2, delay] (equal jitter), so that
    many gateways restarted together do not reconnect in lock step. The
    latest draws are kept in ``delays`` (nominal delay, drawn delay), the
    reset points as ``None``, so that a test or a status page can show the
    sequence.
    """

    def __init__(self, initial_s: float, max_s: float, *, rng: random.Random | None = None) -> None:
        if initial_s <= 0 or max_s < initial_s:
            raise ValueError(f"backoff needs 0 < initial_s <= max_s, got initial_s={initial_s}, max_s={max_s}")
        self.initial_s = initial_s
        self.max_s = max_s
        self._rng = rng or random.Random()
        self._next_s = initial_s
        self.delays: deque[tuple[float, float] | None] = deque(maxlen=64)

    def next_delay(self) -> float:
        """Return the next delay in seconds and double the one after it, up to the cap."""
        nominal = self._next_s
        self._next_s = min(self._next_s * 2, self.max_s)
        delay = self._rng.uniform(nominal / 2, nominal)
        self.delays.append((nominal, delay))
        return delay

    def reset(self) -> None:
        """Start again from the initial delay. Call it after a response from the device, not after a successful connect."""
        if self._next_s != self.initial_s:
            self.delays.append(None)
        self._next_s = self.initial_s


class RepeatLimiter:
    """Lets a repeated warning through once per ``interval_s`` for each key and counts the repeats it holds back."""

    def __init__(self, interval_s: float = 60.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._last: dict[Hashable, float] = {}
        self._held: dict[Hashable, int] = {}

    def __call__(self, key: Hashable) -> int | None:
        """Return None when the warning is held back, else how many repeats were held back since the last one let through."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0)

    def reset(self, key: Hashable) -> None:
        """Forget ``key``: its next warning goes through at once, with no repeats counted from before."""
        self._last.pop(key, None)
        self._held.pop(key, None)


class RetryLog:
    """Logs the failures of one device's reconnect loop without flooding the journal.

    The first failure since the device's last response is logged under the
    caller's event name (``modbus.disconnected``, ``opcua.connect_failed``);
    each later one is a failed retry, logged as ``retry_event`` at most once
    per ``interval_s`` with its attempt number and the repeats held back.
    The response that ends the outage can be logged at info with the number
    of failures and the outage's length (see :meth:`answered`).
    """

    def __init__(self, log: Any, retry_event: str, *, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.retry_event = retry_event
        self.failures = 0
        self._clock = clock
        self._outage_started = 0.0
        self._repeats = RepeatLimiter(interval_s, clock=clock)

    def failed(self, event: str, **fields: Any) -> bool:
        """Log one failure and return True when it is the first since the device's last response."""
        self.failures += 1
        if self.failures == 1:
            self._outage_started = self._clock()
            self.log.warning(event, **fields)
            return True
        if (held := self._repeats(self.retry_event)) is not None:
            self.log.warning(self.retry_event, **fields, attempt=self.failures, repeats_not_logged=held)
        return False

    def answered(self, event: str | None = None, **fields: Any) -> None:
        """Record a response from the device, so that its next failure starts a new outage.

        With ``event``, a response that ends an outage is logged at info
        with ``failures`` and ``outage_s`` (seconds since its first failure).
        """
        if self.failures and event is not None:
            outage_s = round(self._clock() - self._outage_started, 1)
            self.log.info(event, **fields, failures=self.failures, outage_s=outage_s)
        self.failures = 0
        # The retries held back belong to the outage that ended; ``failures`` above counts them.
        self._repeats.reset(self.retry_event)


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


async def sleep_unless_cancelled(delay_s: float) -> None:
    """Sleep before the next request of a reconnect or poll loop; raise CancelledError instead when a cancel is pending.

    A cancel that Python 3.11's ``asyncio.wait_for`` swallowed during a failed
    connect leaves no CancelledError behind, only the task's pending
    cancellation count. Without this check the loop would go on retrying.
    """
    raise_if_cancelling()
    await asyncio.sleep(delay_s)
