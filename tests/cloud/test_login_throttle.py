"""The failed log-in throttle on its own, with a hand-driven clock: exact counts, the window, resets and the warning."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from valuegate.cloud.throttle import LoginThrottle, LoginThrottled


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def throttle(clock) -> LoginThrottle:
    return LoginThrottle(limit=5, window_s=300, clock=clock)


def fail(throttle: LoginThrottle, times: int, username: str = "fin1", client: str = "10.0.0.1") -> None:
    for _ in range(times):
        throttle.check(username, client)
        throttle.failed(username, client)


def test_fifth_failure_locks_the_pair(throttle, clock) -> None:
    fail(throttle, 4)
    throttle.check("fin1", "10.0.0.1")
    throttle.failed("fin1", "10.0.0.1")
    clock.now += 20
    with pytest.raises(LoginThrottled) as rejected:
        throttle.check("fin1", "10.0.0.1")
    # The first failure was 20 s ago, so it leaves the 300 s window in 280 s.
    assert rejected.value.retry_after_s == 280


def test_lock_ends_with_oldest_failure(throttle, clock) -> None:
    fail(throttle, 1)
    clock.now += 60
    fail(throttle, 4)
    clock.now += 239.5
    with pytest.raises(LoginThrottled) as rejected:
        throttle.check("fin1", "10.0.0.1")
    assert rejected.value.retry_after_s == 1
    clock.now += 0.5
    throttle.check("fin1", "10.0.0.1")
    # Four failures are still in the window: one more locks again, until the second failure leaves it.
    throttle.failed("fin1", "10.0.0.1")
    with pytest.raises(LoginThrottled) as again:
        throttle.check("fin1", "10.0.0.1")
    assert again.value.retry_after_s == 60


def test_failures_older_than_the_window_do_not_count(throttle, clock) -> None:
    for _ in range(10):
        fail(throttle, 1)
        clock.now += 61
    throttle.check("fin1", "10.0.0.1")


def test_success_clears_the_count(throttle) -> None:
    fail(throttle, 4)
    throttle.succeeded("fin1", "10.0.0.1")
    fail(throttle, 4)
    throttle.check("fin1", "10.0.0.1")
    throttle.failed("fin1", "10.0.0.1")
    with pytest.raises(LoginThrottled):
        throttle.check("fin1", "10.0.0.1")


def test_pairs_count_apart(throttle) -> None:
    fail(throttle, 5)
    throttle.check("fin1", "10.0.0.2")
    throttle.check("csm1", "10.0.0.1")
    with pytest.raises(LoginThrottled):
        throttle.check("fin1", "10.0.0.1")


def test_lock_logs_one_warning_without_the_password(throttle) -> None:
    with capture_logs() as events:
        fail(throttle, 5)
        for _ in range(3):
            with pytest.raises(LoginThrottled):
                throttle.check("fin1", "10.0.0.1")
    assert events == [
        {"event": "login_throttled", "log_level": "warning", "username": "fin1", "client": "10.0.0.1", "failures": 5, "window_s": 300, "retry_after_s": 300}
    ]


def test_memory_keeps_max_pairs(clock) -> None:
    throttle = LoginThrottle(limit=5, window_s=300, max_pairs=3, clock=clock)
    for name in ("a", "b", "c", "d"):
        fail(throttle, 5, username=name)
    # "a" was seen first and is forgotten; the other three stay locked.
    throttle.check("a", "10.0.0.1")
    for name in ("b", "c", "d"):
        with pytest.raises(LoginThrottled):
            throttle.check(name, "10.0.0.1")


def test_forget_user_clears_every_address(throttle) -> None:
    fail(throttle, 5, client="10.0.0.1")
    fail(throttle, 5, client="10.0.0.2")
    fail(throttle, 5, username="csm1")

    assert throttle.forget_user("fin1") == 2
    throttle.check("fin1", "10.0.0.1")
    throttle.check("fin1", "10.0.0.2")
    with pytest.raises(LoginThrottled):
        throttle.check("csm1", "10.0.0.1")
    assert throttle.forget_user("fin1") == 0
