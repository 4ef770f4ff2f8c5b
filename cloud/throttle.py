"""Throttling of failed log-ins per user name and client address, held in the memory of one server process."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

__all__ = ("LoginThrottled", "LoginThrottle", "login_throttle")

log = structlog.get_logger("valuegate.cloud.auth")


class LoginThrottled(Exception):
    """Too many failed log-ins for this user name from this client address; ``retry_after_s`` is when the next try is taken."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many failed log-ins; try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass
class LoginThrottle:
    """Failed log-ins per (user name, client address) over a sliding window, held in this server process only.

    After ``limit`` failures within ``window_s`` seconds, log-ins of that pair are
    refused without checking the password until the oldest failure leaves the
    window. A successful log-in clears the pair's count, and enabling a user clears
    the counts of all its pairs (:meth:`forget_user`).
    """

    limit: int = 5
    """Failures within the window that start refusing."""
    window_s: float = 300.0
    """Length of the sliding window in seconds."""
    max_pairs: int = 10_000
    """Pairs kept at most; beyond it the pairs seen first are forgotten, so that random user names cannot fill the memory."""
    clock: Callable[[], float] = time.monotonic
    _failures: dict[tuple[str, str], deque[float]] = field(default_factory=dict, repr=False)

    def _recent(self, key: tuple[str, str]) -> deque[float]:
        failures = self._failures.get(key, deque())
        horizon = self.clock() - self.window_s
        while failures and failures[0] <= horizon:
            failures.popleft()
        return failures

    def check(self, username: str, client: str) -> None:
        """Raise :class:`LoginThrottled` while the pair has ``limit`` failures in the window."""
        failures = self._recent((username, client))
        if len(failures) >= self.limit:
            raise LoginThrottled(max(1, math.ceil(failures[0] + self.window_s - self.clock())))

    def failed(self, username: str, client: str) -> None:
        """Count a failure; the one that reaches ``limit`` logs ``login_throttled``."""
        key = (username, client)
        failures = self._recent(key)
        if key not in self._failures and len(self._failures) >= self.max_pairs:
            self._forget_oldest()
        failures.append(self.clock())
        self._failures[key] = failures
        if len(failures) == self.limit:
            retry = max(1, math.ceil(failures[0] + self.window_s - self.clock()))
            log.warning("login_throttled", username=username, client=client, failures=len(failures), window_s=self.window_s, retry_after_s=retry)

    def succeeded(self, username: str, client: str) -> None:
        self._failures.pop((username, client), None)

    def forget_user(self, username: str) -> int:
        """Drop the failures of ``username`` from every client address and return how many pairs were dropped."""
        keys = [key for key in self._failures if key[0] == username]
        for key in keys:
            del self._failures[key]
        return len(keys)

    def _forget_oldest(self) -> None:
        for key in [key for key in self._failures if not self._recent(key)]:
            del self._failures[key]
        while len(self._failures) >= self.max_pairs:
            del self._failures[next(iter(self._failures))]


login_throttle = LoginThrottle()
"""The throttle of this server process, shared by the API and the web log-in."""
