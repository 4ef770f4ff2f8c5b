"""Reconnect backoff: doubling delays with jitter, the cap, the reset, which Modbus counter each kind of loss raises, and the retry warnings."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
import structlog

from valuegate.adapters.backoff import Backoff, RepeatLimiter, RetryLog
from valuegate.adapters.devices import ModbusDeviceConfig, open_device
from valuegate.services import free_port

from .servers import ModbusServer, eventually, first, tag_map


def test_delays_double_within_jitter_bounds() -> None:
    backoff = Backoff(0.1, 1.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(8)]
    # Nominal delays 0.1, 0.2, 0.4, 0.8, then the 1.0 cap; each is drawn from [nominal / 2, nominal].
    nominal = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    for delay, expected in zip(delays, nominal, strict=True):
        assert expected / 2 <= delay <= expected
    assert max(delays) <= 1.0
    assert delays[4] > 0.4, "the fifth delay should reach the cap's range"


def test_jitter_follows_the_random_source() -> None:
    """The draws are exactly uniform(nominal / 2, nominal) of the given source, so two sources give two sequences."""
    reference = random.Random(11)
    expected = [reference.uniform(nominal / 2, nominal) for nominal in (0.5, 1.0, 2.0, 2.0)]
    backoff = Backoff(0.5, 2.0, rng=random.Random(11))
    assert [backoff.next_delay() for _ in range(4)] == expected
    other = Backoff(0.5, 2.0, rng=random.Random(12))
    assert [other.next_delay() for _ in range(4)] != expected


def test_spread_covers_the_jitter_range() -> None:
    backoff = Backoff(1.0, 1.0, rng=random.Random(3))
    delays = [backoff.next_delay() for _ in range(2000)]
    assert min(delays) >= 0.5
    assert max(delays) <= 1.0
    # Uniform on [0.5, 1.0]: the lowest and highest tenth of the range are both reached.
    assert min(delays) < 0.55
    assert max(delays) > 0.95


def test_reset_returns_to_initial_delay() -> None:
    backoff = Backoff(0.2, 5.0, rng=random.Random(5))
    for _ in range(6):
        backoff.next_delay()
    assert backoff.next_delay() > 2.5  # nominal 5.0 (capped), at least half of it
    backoff.reset()
    assert 0.1 <= backoff.next_delay() <= 0.2
    assert 0.2 <= backoff.next_delay() <= 0.4


def test_draws_and_resets_are_recorded() -> None:
    backoff = Backoff(0.1, 0.3, rng=random.Random(2))
    drawn = [backoff.next_delay() for _ in range(3)]
    backoff.reset()
    backoff.reset()  # already at the start: nothing to record
    drawn.append(backoff.next_delay())
    assert list(backoff.delays) == [(0.1, drawn[0]), (0.2, drawn[1]), (0.3, drawn[2]), None, (0.1, drawn[3])]


def test_repeat_limiter_lets_one_through_per_interval() -> None:
    now = [100.0]
    limiter = RepeatLimiter(60.0, clock=lambda: now[0])
    assert limiter("a") == 0
    assert limiter("a") is None
    assert limiter("b") == 0, "each key has its own interval"
    now[0] += 59.9
    assert limiter("a") is None
    now[0] += 0.1
    assert limiter("a") == 2, "the two held-back repeats are counted"
    assert limiter("a") is None


@pytest.mark.parametrize(("initial_s", "max_s"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_invalid_bounds_rejected(initial_s: float, max_s: float) -> None:
    with pytest.raises(ValueError, match="0 < initial_s <= max_s"):
        Backoff(initial_s, max_s)


def modbus_config(port: int, **overrides: object) -> ModbusDeviceConfig:
    settings = {"id": "press-1", "host": "127.0.0.1", "port": port, "unit_id": 1, "tag_map": "unused", "poll_ms": 400,
                "timeout_ms": 300, "reconnect_min_ms": 50, "reconnect_max_ms": 100}  # fmt: skip
    settings.update(overrides)
    return ModbusDeviceConfig(**settings)


def two_registers() -> list[dict]:
    return [{"name": f"r{i}", "table": "holding_register", "address": i, "type": "uint16", "order": "ABCD"} for i in range(2)]


async def test_restart_counts_closed_then_refused(tmp_path: Path) -> None:
    """The server goes away between two polls: one closed connection, then only refused connects until it is back."""
    port = free_port()
    server = await ModbusServer(port, holding={0: [1, 5]}).start()
    async with open_device(modbus_config(port), tag_map(tmp_path, "restart", "modbus", two_registers())) as client:
        stream = client.stream()
        assert [s.value for s in await first(stream, lambda b: True)] == [1, 5]
        await server.stop()
        outage = await first(stream, lambda b: True)
        assert {s.detail for s in outage} == {"disconnected"}
        pending = asyncio.ensure_future(first(stream, lambda b: b[0].status == "good", timeout_s=15))
        await eventually(lambda: client.stats["refused"] >= 3)
        server = await ModbusServer(port, holding={0: [0, 6]}).start()
        batch = await pending
        assert [s.value for s in batch] == [0, 6]
        stats = dict(client.stats)
        await stream.aclose()
    await server.stop()

    assert stats["closed"] == 1
    assert stats["resets"] == 0
    assert stats["timeouts"] == 0
    assert stats["refused"] >= 3
    assert stats["connect_failures"] == stats["refused"]
    assert stats["reconnects"] == 1


async def test_slow_server_counts_one_timeout(tmp_path: Path) -> None:
    async with ModbusServer(free_port(), holding={0: [3, 4]}) as server:
        async with open_device(modbus_config(server.port), tag_map(tmp_path, "slow", "modbus", two_registers())) as client:
            stream = client.stream()
            await first(stream, lambda b: True)
            server.delay_s = 1.0
            outage = await first(stream, lambda b: True)
            assert {(s.status, s.detail) for s in outage} == {("bad", "disconnected")}
            server.delay_s = 0.0
            await first(stream, lambda b: b[0].status == "good")
            stats = dict(client.stats)
            await stream.aclose()
    assert stats["timeouts"] == 1
    assert stats.get("closed", 0) == 0
    assert stats["resets"] == 0
    assert stats["refused"] == 0
    assert stats["reconnects"] == 1


def since_last_reset(backoff: Backoff) -> list[tuple[float, float]]:
    draws = list(backoff.delays)
    while None in draws:
        draws = draws[draws.index(None) + 1:]
    return draws


async def test_late_responses_grow_delays(tmp_path: Path) -> None:
    """Each connect succeeds but every read times out: the delays double to the cap and restart only after a poll gets a response."""
    port = free_port()
    config = modbus_config(port, poll_ms=50, timeout_ms=150, reconnect_min_ms=50, reconnect_max_ms=400)
    async with ModbusServer(port, holding={0: [3, 4]}) as server:
        async with open_device(config, tag_map(tmp_path, "late", "modbus", two_registers())) as client:
            stream = client.stream()
            await first(stream, lambda b: b[0].status == "good")
            server.delay_s = 1.0
            with structlog.testing.capture_logs() as logged:
                batches = []
                async for batch in stream:
                    batches.append(batch)
                    if client.stats["timeouts"] >= 6:
                        break
                timeouts, reconnects, failures = client.stats["timeouts"], client.stats["reconnects"], client.stats["connect_failures"]
                failing = since_last_reset(client.backoff)
                server.delay_s = 0.0
                await first(stream, lambda b: b[0].status == "good", timeout_s=15)
            await stream.aclose()

    # One drawn delay per failed poll, doubling from reconnect_min_ms to reconnect_max_ms.
    assert [nominal for nominal, _ in failing] == [0.05, 0.1, 0.2, 0.4, 0.4, 0.4][: len(failing)]
    assert len(failing) == timeouts == 6
    assert all(nominal / 2 <= delay <= nominal for nominal, delay in failing)
    # A connection that opens but gets no response is no reconnect, and each such attempt after the loss failed.
    assert reconnects == 0
    assert failures == 5, "each poll after the first lost one failed an attempt"
    assert client.stats["reconnects"] == 1, "the first answer ends the outage with one reconnect"
    assert all({(s.status, s.detail) for s in batch} == {("bad", "disconnected")} for batch in batches)
    # The first poll with a response restarts the backoff.
    assert client.backoff.delays[-1] is None

    # One warning for the loss, one for the first failed retry; the other four are held back for a minute.
    events = [(e["event"], e.get("cause"), e.get("attempt"), e.get("repeats_not_logged")) for e in logged if e["log_level"] == "warning"]
    assert events == [("modbus.disconnected", "timeouts", None, None), ("modbus.retry_failed", "timeouts", 2, 0)]
    warned = [e for e in logged if e["log_level"] == "warning"]
    assert [e["retry_in_s"] for e in warned] == [round(failing[0][1], 2), round(failing[1][1], 2)]
    assert all(e["device"] == "press-1" for e in warned)

    # The reconnects inside the outage log at debug only. The poll that gets a response ends it with one info line.
    infos = [e for e in logged if e["log_level"] == "info"]
    assert [e["event"] for e in infos] == ["modbus.connected"], "one connect line per outage, not one per reconnect"
    assert infos[0]["failures"] == 6
    assert infos[0]["outage_s"] > 0
    assert logged.index(infos[0]) > logged.index(warned[-1]), "the connect line closes the outage"
    opened = [e for e in logged if e["event"] == "modbus.connection_opened"]
    # Each failed attempt opened a connection that got no response, and one more opened connection got one.
    assert len(opened) == failures + 1
    assert all(e["log_level"] == "debug" and e["failures"] >= 1 for e in opened)


async def test_refused_start_logs_one_connect(tmp_path: Path) -> None:
    """No server at start: one connect_failed warning, then one connected line once a poll gets a response."""
    port = free_port()
    config = modbus_config(port, reconnect_min_ms=50, reconnect_max_ms=100)
    with structlog.testing.capture_logs() as logged:
        async with open_device(config, tag_map(tmp_path, "refused", "modbus", two_registers())) as client:
            stream = client.stream()
            pending = asyncio.ensure_future(first(stream, lambda b: b[0].status == "good", timeout_s=15))
            await eventually(lambda: client.stats["refused"] >= 3)
            async with ModbusServer(port, holding={0: [7, 8]}):
                batch = await pending
                failed_connects = client.stats["connect_failures"]
                await first(stream, lambda b: b[0].status == "good")
                await stream.aclose()

    assert [s.value for s in batch] == [7, 8]
    lifecycle = [(e["event"], e["log_level"]) for e in logged if e["log_level"] in ("info", "warning")]
    assert lifecycle == [("modbus.connect_failed", "warning"), ("modbus.retry_failed", "warning"), ("modbus.connected", "info")]
    connected = next(e for e in logged if e["event"] == "modbus.connected")
    # The attempt on entering the context is not logged; stream() logs and counts its own attempts.
    assert connected["failures"] == failed_connects - 1
    assert connected["device"] == "press-1"


def test_held_back_retries_stay_with_their_outage() -> None:
    """Retries held back in one outage are not reported with the first retry of the next one."""
    now = [0.0]
    with structlog.testing.capture_logs() as logged:
        retries = RetryLog(structlog.get_logger("test"), "modbus.retry_failed", interval_s=60, clock=lambda: now[0])
        for second in range(7):
            now[0] = float(second)
            retries.failed("modbus.disconnected")
        retries.answered("modbus.connected")
        now[0] = 100.0
        retries.failed("modbus.disconnected")
        now[0] = 101.0
        retries.failed("modbus.disconnected")
    warnings = [(e["event"], e.get("attempt"), e.get("repeats_not_logged")) for e in logged if e["log_level"] == "warning"]
    # First outage: its first failure, its first retry; attempts 3 to 7 are held back. Second outage: the same, from 0 again.
    assert warnings == [("modbus.disconnected", None, None), ("modbus.retry_failed", 2, 0),
                        ("modbus.disconnected", None, None), ("modbus.retry_failed", 2, 0)]
    (connected,) = [e for e in logged if e["event"] == "modbus.connected"]
    assert connected["failures"] == 7
