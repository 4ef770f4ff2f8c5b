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
from valuegate.edge.rejection_notice import RejectionNotice
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
    watch = ResendWatch(threshold=3, window_s=600, min_span_s=300, clock=lambda: now[0])
    assert watch.note(5) is None
    assert watch.note(5) is None
    assert watch.note(9) is None  # another sequence counts on its own
    now[0] = 300
    assert watch.note(5) == RepeatedResend(5, 3, 600, 300)
    assert watch.repeated() == RepeatedResend(5, 3, 600, 300)

    now[0] = 601  # the first two requests for 5 left the window
    assert watch.repeated() is None
    assert watch.note(5) is None

    for step in range(3):
        now[0] = 700 + 150 * step
        watch.note(7)
    assert watch.repeated() == RepeatedResend(7, 3, 600, 300)
    watch.acked(7)
    assert watch.repeated() is None


def test_watch_ignores_outage_burst() -> None:
    # An ingest worker down for 25 s: the cloud requests the gap every 5 s until the worker is back.
    now = [0.0]
    watch = ResendWatch(clock=lambda: now[0])
    for step in range(6):
        now[0] = 5.0 * step
        assert watch.note(35) is None
    assert watch.repeated() is None
    # A second outage four minutes later still spans less than the minimum.
    for step in range(6):
        now[0] = 240 + 5.0 * step
        assert watch.note(35) is None


def test_watch_reports_steady_repeat() -> None:
    # A voucher the cloud rejects: the request comes back every minute for as long as the agent publishes it.
    now = [0.0]
    watch = ResendWatch(clock=lambda: now[0])
    repeats = []
    for minute in range(6):
        now[0] = 60.0 * minute
        repeats.append(watch.note(12))
    assert repeats[:5] == [None] * 5
    assert repeats[5] == RepeatedResend(12, 6, 600, 300)


def test_watch_rejects_span_beyond_window() -> None:
    with pytest.raises(ValueError, match="min_span_s 600 must be below window_s 600"):
        ResendWatch(window_s=600, min_span_s=600)


@pytest.mark.mosquitto
async def test_repeated_resend_warns_once(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    # The stand-in cloud trusts another key, so it rejects every voucher, as the cloud does with a key it does not accept yet.
    cloud = standin(mosquitto.port, first_key="did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK")
    now = [0.0]
    try:
        async with gateway(tmp_path / "gw", mosquitto.port) as gw:
            gw.publisher.resend_watch = ResendWatch(clock=lambda: now[0])
            await gw.issue(2)
            assert await wait_until(lambda: len(cloud.rejected) >= 2, 10)

            with structlog.testing.capture_logs() as logged:

                async def request_at(seconds: float) -> None:
                    # The watch reads the clock when the agent handles the request, so wait for that before the next one.
                    handled = sum(entry["event"] == "resend_requested" for entry in logged)
                    now[0] = seconds
                    cloud.client.publish(f"{cloud.prefix}/resend", json.dumps({"schema": "valuegate/resend/v1", "from_seq": 1}), qos=1)
                    assert await wait_until(lambda: sum(entry["event"] == "resend_requested" for entry in logged) == handled + 1, 10)

                # A burst within seconds, as after an ingest worker or broker restart, is no sign of a rejection.
                for seconds in (0, 5, 10):
                    await request_at(seconds)
                assert not [entry for entry in logged if entry["event"] == "resend_repeated"]
                assert gw.publisher.metrics.value("valuegate_resend_repeated_from_seq") == 0

                # The same request still coming five minutes later is.
                for seconds in (150, 310, 320):
                    await request_at(seconds)
            warnings = [entry for entry in logged if entry["event"] == "resend_repeated"]
            # The fifth request reaches the span; the sixth is within the minute of the rate limit.
            assert len(warnings) == 1
            assert warnings[0]["log_level"] == "warning"
            assert warnings[0]["from_seq"] == 1
            assert warnings[0]["requests"] == 5
            # The stand-in cloud sends no rejection notice, so the warning names an outage on the way first.
            assert "reported no rejection" in warnings[0]["reason"]
            assert "ingest worker" in warnings[0]["reason"]
            assert gw.publisher.metrics.value("valuegate_resend_repeated_from_seq") == 1

            # With a notice from the cloud, the next warning names its code and the keys. The log limit is cleared, as a minute would.
            gw.publisher.cloud_rejection.note(RejectionNotice("voucher", "key_unknown", "gw-1:1", "signed by an unknown key"))
            gw.publisher.limit.reset(("resend_repeated", 1))
            with structlog.testing.capture_logs() as logged:
                for seconds in (390, 400):
                    await request_at(seconds)
            warnings = [entry for entry in logged if entry["event"] == "resend_repeated"]
            assert len(warnings) == 1
            assert "reported a rejection (key_unknown)" in warnings[0]["reason"]

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
        now = [0.0]
        agent.publisher.resend_watch = ResendWatch(clock=lambda: now[0])
        assert agent.health()["resend_repeated"] is None
        for seconds in (0.0, 200.0, 400.0):
            now[0] = seconds
            resend(mosquitto.port, 4)
            assert await wait_until(lambda: agent.publisher.resend_watch._requests.get(4, [None])[-1] == seconds, 10)
        assert await wait_until(lambda: agent.health()["resend_repeated"] is not None, 10)
        report = agent.health()
        assert report["resend_repeated"] == {"from_seq": 4, "requests": 3, "window_s": 600.0, "span_s": 400.0}
        # The agent itself works, so the report stays ok and /healthz returns 200.
        assert report["ok"] is True
