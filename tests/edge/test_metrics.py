"""Health and metrics endpoints, the spool alarm, and rate-limited warnings."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import structlog

from valuegate.edge import keys, retention
from valuegate.edge.agent import EdgeAgent, running
from valuegate.edge.metrics import LogLimiter
from valuegate.edge.spool import Spool
from valuegate.edge.spool_rows import CounterReading, MachineBatch, StateEvent
from valuegate.services import MosquittoServer

from .helpers import load
from .test_publish import wait_until


def test_log_limiter_holds_repeats() -> None:
    now = [0.0]
    limit = LogLimiter(60, clock=lambda: now[0])
    assert limit("a") == 0
    assert limit("a") is None
    assert limit("b") == 0  # keys are independent
    now[0] = 30
    assert limit("a") is None
    now[0] = 61
    assert limit("a") == 2  # two repeats were held back
    assert limit("a") is None


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.mosquitto
async def test_health_and_metrics_served(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    from valuegate.services import free_port

    port = free_port()
    config = load(tmp_path, mosquitto.port, metrics={"host": "127.0.0.1", "port": port})
    keys.create_key(config.state_path / "keys")
    async with EdgeAgent(config, machines=[]) as agent, running(agent):
        assert await wait_until(lambda: agent.publisher.connected, 10)
        status, body = await _to_thread(_get, f"http://127.0.0.1:{port}/healthz")
        report = json.loads(body)
        assert status == 200
        assert report["mqtt_connected"] is True
        assert report["gateway"] == "gw-1"
        status, body = await _to_thread(_get, f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert b"valuegate_outbox_depth 0.0" in body
        assert b"valuegate_mqtt_connected 1.0" in body
    # The endpoint is gone once the agent has stopped.
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)


@pytest.mark.mosquitto
async def test_spool_alarm_before_cap(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    config = load(tmp_path, mosquitto.port, spool={"max_mb": 4, "alarm_ratio": 0.5})
    keys.create_key(config.state_path / "keys")
    spool = Spool(config.state_path / "spool.db")
    states = [StateEvent(i, 0, "r" * 300) for i in range(8000)]
    spool.append([MachineBatch("m1", states, [CounterReading(i, "c", i) for i in range(8000)], 8000)])
    spool.close()
    async with EdgeAgent(config, machines=[]) as agent:
        await retention.housekeep(agent.outbox_spool, config.spool, agent.metrics, keep=[], log=structlog.get_logger("test"), limit=LogLimiter())
        used = agent.metrics.value("valuegate_spool_bytes")
        assert 2 * 1048576 <= used <= 4 * 1048576
        assert agent.metrics.value("valuegate_spool_alarm") == 1
        assert agent.health()["spool_alarm"] is True
        assert agent.metrics.value("valuegate_spool_pruned_rows_total", kind="unsummarized_events") == 0


async def _to_thread(function, *args):  # noqa: ANN001, ANN202
    import asyncio

    return await asyncio.to_thread(function, *args)
