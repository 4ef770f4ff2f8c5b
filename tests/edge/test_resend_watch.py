"""Repeated resend requests for one sequence: a rate-limited WARNING, a metric and a /healthz field."""

from __future__ import annotations

import json
from pathlib import Path

import paho.mqtt.client as mqtt
import paho.mqtt.publish as paho_publish
import pytest
import structlog

from valuegate.edge import keys
from valuegate.edge.agent import EdgeAgent, running
from valuegate.edge.resend_watch import RepeatedResend, ResendWatch
from valuegate.services import MosquittoServer

from .helpers import GATEWAY, SITE, TENANT, load
from .test_publish import gateway, standin, wait_until

RESEND_TOPIC = f"valuegate/v1/{TENANT}/{SITE}/{GATEWAY}/resend"


def resend(port: int, from_seq: int) -> None:
    payload = json.dumps({"schema": "valuegate/resend/v1", "from_seq": from_seq})
    paho_publish.single(RESEND_TOPIC, payload, qos=1, hostname="127.0.0.1", port=port, protocol=mqtt.MQTTv5)


def test_watch_threshold_and_window() -> None:
    now = [0.0]
    watch = ResendWatch(threshold=3, window_s=600, clock=lambda: now[0])
    assert watch.note(5) is None
    assert watch.note(5) is None
    assert watch.note(9) is None  # another sequence counts on its own
    now[0] = 100
    assert watch.note(5) == RepeatedResend(5, 3, 600)
    assert watch.repeated() == RepeatedResend(5, 3, 600)

    now[0] = 601  # the first two requests for 5 left the window
    assert watch.repeated() is None
    assert watch.note(5) is None

    for _ in range(3):
        watch.note(7)
    assert watch.repeated() == RepeatedResend(7, 3, 600)
    watch.acked(7)
    assert watch.repeated() is None


@pytest.mark.mosquitto
async def test_repeated_resend_warns_once(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    # The stand-in cloud trusts another key, so it rejects every voucher, as the cloud does with a key it does not accept yet.
    cloud = standin(mosquitto.port, first_key="did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK")
    try:
        async with gateway(tmp_path / "gw", mosquitto.port) as gw:
            await gw.issue(2)
            assert await wait_until(lambda: len(cloud.rejected) >= 2, 10)
            with structlog.testing.capture_logs() as logged:
                for _ in range(4):
                    cloud.client.publish(f"{cloud.prefix}/resend", json.dumps({"schema": "valuegate/resend/v1", "from_seq": 1}), qos=1)
                assert await wait_until(lambda: sum(entry["event"] == "resend_requested" for entry in logged) == 4, 10)
            warnings = [entry for entry in logged if entry["event"] == "resend_repeated"]
            # The third request reaches the threshold; the fourth is within the minute of the rate limit.
            assert len(warnings) == 1
            assert warnings[0]["log_level"] == "warning"
            assert warnings[0]["from_seq"] == 1
            assert warnings[0]["requests"] == 3
            assert "rejections" in warnings[0]["reason"]
            assert gw.publisher.metrics.value("valuegate_resend_repeated_from_seq") == 1

            # Once the cloud accepts the vouchers, the ack clears the repeat.
            cloud.first_key = None
            cloud.client.publish(f"{cloud.prefix}/resend", json.dumps({"schema": "valuegate/resend/v1", "from_seq": 1}), qos=1)
            assert await wait_until(lambda: gw.publisher.acked_through == 2, 10)
            assert gw.publisher.resend_watch.repeated() is None
            assert gw.publisher.metrics.value("valuegate_resend_repeated_from_seq") == 0
    finally:
        cloud.stop()


@pytest.mark.mosquitto
async def test_health_reports_repeated_resend(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    config = load(tmp_path, mosquitto.port)
    keys.create_key(config.state_path / "keys")
    async with EdgeAgent(config, machines=[]) as agent, running(agent):
        # Online comes after the session subscribed to its resend topic.
        assert await wait_until(lambda: agent.publisher._current is not None and agent.publisher._current.online, 10)
        assert agent.health()["resend_repeated"] is None
        for _ in range(3):
            resend(mosquitto.port, 4)
        assert await wait_until(lambda: agent.health()["resend_repeated"] is not None, 10)
        report = agent.health()
        assert report["resend_repeated"] == {"from_seq": 4, "requests": 3, "window_s": 600.0}
        # The agent itself works, so the report stays ok and /healthz returns 200.
        assert report["ok"] is True
