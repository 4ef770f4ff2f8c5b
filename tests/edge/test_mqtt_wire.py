"""What the agent puts on the wire: the PUBLISH packets read back from the bytes a proxy forwards to Mosquitto."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from valuegate.services import MosquittoServer

from .helpers import GATEWAY, SITE, TENANT
from .proxy import PublishCutProxy
from .test_publish import _store_minutes, gateway, standin, wait_until

pytestmark = pytest.mark.mosquitto

TOPIC_ALIAS = 0x23
# MQTT 5.0 section 2.2.2.2: property identifier -> length of its value, or a kind for variable-length values.
PROPERTY_SIZES: dict[int, int | str] = {
    0x01: 1, 0x02: 4, 0x03: "string", 0x08: "string", 0x09: "binary", 0x0B: "varint", 0x23: 2, 0x26: "pair",
}  # fmt: skip


def _varint(data: bytes, index: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[index]
        index += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, index


def parse_publish(packet: bytes) -> tuple[str, dict[int, bytes], bytes]:
    """Return the topic name, the properties (identifier -> raw value) and the payload of one MQTT 5 PUBLISH packet."""
    qos = (packet[0] >> 1) & 0x03
    _length, index = _varint(packet, 1)
    topic_length = int.from_bytes(packet[index : index + 2], "big")
    topic = packet[index + 2 : index + 2 + topic_length].decode("utf-8")
    index += 2 + topic_length + (2 if qos else 0)
    properties_length, index = _varint(packet, index)
    end = index + properties_length
    properties: dict[int, bytes] = {}
    while index < end:
        identifier = packet[index]
        index += 1
        size = PROPERTY_SIZES[identifier]
        start = index
        if size == "varint":
            _value, index = _varint(packet, index)
        elif size in ("string", "binary"):
            index += 2 + int.from_bytes(packet[index : index + 2], "big")
        elif size == "pair":
            index += 2 + int.from_bytes(packet[index : index + 2], "big")
            index += 2 + int.from_bytes(packet[index : index + 2], "big")
        else:
            assert isinstance(size, int)
            index += size
        properties[identifier] = packet[start:index]
    return topic, properties, packet[end:]


async def test_no_topic_alias_on_any_publish(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    """Vouchers, telemetry and status go out with their full topic and no topic alias, so that a resend after a reconnect means the same."""
    cloud = standin(mosquitto.port)
    proxy = PublishCutProxy(mosquitto.port, cut_after_publishes=1_000_000, topic_suffix=b"/vouchers")
    await proxy.start()
    try:
        async with gateway(tmp_path / "gw", proxy.port) as gw:
            await gw.spool.call(_store_minutes, 30)
            await gw.issue(5)
            assert await gw.wait_empty(15) == 0
            assert await wait_until(lambda: cloud.records() == 30, 10)
    finally:
        await proxy.stop()
        cloud.stop()

    prefix = f"valuegate/v1/{TENANT}/{SITE}/{GATEWAY}/"
    published = [parse_publish(packet) for packet in proxy.sent]
    topics = [topic for topic, _, _ in published]
    assert topics.count(prefix + "vouchers") == 5
    assert prefix + "telemetry" in topics
    assert prefix + "status" in topics
    for topic, properties, payload in published:
        assert topic.startswith(prefix), topic
        assert TOPIC_ALIAS not in properties, topic
        assert isinstance(json.loads(payload), dict), topic  # the packet was read up to its JSON payload
