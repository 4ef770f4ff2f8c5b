"""A plain paho client for tests: publishes as a gateway would and records what the cloud sends back."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


class Probe:
    """Publishes payloads and collects ``ack`` and ``resend`` messages per gateway."""

    def __init__(self, port: int) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe([("valuegate/v1/+/+/+/ack", 1), ("valuegate/v1/+/+/+/resend", 1)])
        if not subscribed.wait(10):
            raise TimeoutError("probe did not get its SUBACK within 10 s")

    def _on_message(self, _client: Any, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.received.append((message.topic, msgspec.json.decode(message.payload)))
            self._lock.notify_all()

    def publish(self, topic: str, payload: bytes | dict[str, Any], user_properties: list[tuple[str, str]] | None = None) -> None:
        data = payload if isinstance(payload, bytes) else msgspec.json.encode(payload)
        properties = None
        if user_properties:
            properties = Properties(PacketTypes.PUBLISH)
            properties.UserProperty = user_properties
        self.client.publish(topic, data, qos=1, properties=properties).wait_for_publish(10)

    def publish_telemetry(self, gateway: Any, payload: bytes) -> None:
        """Publish ``payload`` on the telemetry topic of ``gateway`` (a conftest Gateway), signed with its key."""
        self.publish(gateway.topic("telemetry"), payload, gateway.telemetry_properties(payload))

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> tuple[str, dict[str, Any]]:
        """Return the first received message matching ``predicate(topic, body)``; fail after ``timeout`` seconds.

        Polls without blocking, so that the ingest workers on the same event loop keep running.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                for topic, body in self.received:
                    if predicate(topic, body):
                        return topic, body
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching message within {timeout} s; received {self.received}")
            await asyncio.sleep(0.02)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
