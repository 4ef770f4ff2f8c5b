"""Messages of the edge publisher besides vouchers: schemas and limits of the cloud's control messages, the gateway's status, telemetry batches.

The cloud sends to the gateway's topics ``ack`` (the highest contiguous
stored sequence), ``resend`` (from a sequence, naming whether vouchers or
records are missing) and records requests (machines and a time span). The
gateway keeps a retained ``status``. docs/architecture.md describes the protocol.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass
from typing import Any

__all__ = (
    "ACK_SCHEMA",
    "NOT_AUTHORIZED",
    "RECORDS_REQUEST_SCHEMA",
    "RESEND_SCHEMA",
    "STATUS_SCHEMA",
    "ClientEvent",
    "int_field",
    "iso_now",
    "known_instances",
    "now_ms",
    "records_span",
    "remember_instance",
    "split_records",
)

ACK_SCHEMA = "valuegate/ack/v1"
# PUBACK reason code 0x87 (MQTT 5.0, section 3.4.2.1): the broker's access rules do not allow the publish.
NOT_AUTHORIZED = 0x87
RESEND_SCHEMA = "valuegate/resend/v1"
# The cloud's request for the records of machines over a time span (a baseline period), on the resend topic.
RECORDS_REQUEST_SCHEMA = "valuegate/records-request/v1"
# The maximum span and machine count of one records request; larger requests are ignored and counted.
RECORDS_REQUEST_MAX_MS = 62 * 86_400_000
RECORDS_REQUEST_MAX_MACHINES = 64
STATUS_SCHEMA = "valuegate/status/v1"


@dataclass(slots=True)
class ClientEvent:
    """One paho callback, queued for the session: CONNACK, disconnect or an incoming message."""

    kind: str  # connack, disconnect, message
    code: int = 0
    session_present: bool = False
    properties: Any = None
    topic: str = ""
    payload: bytes = b""


def split_records(prefix: bytes, records: list[bytes], limit: int) -> list[list[bytes]]:
    """Split JSON records into groups whose batch payload (``prefix`` + records + closing) fits in ``limit`` bytes."""
    groups: list[list[bytes]] = []
    current: list[bytes] = []
    size = len(prefix) + 2
    for record in records:
        extra = len(record) + (1 if current else 0)
        if current and size + extra > limit:
            groups.append(current)
            current, size = [], len(prefix) + 2
            extra = len(record)
        if len(prefix) + 2 + len(record) > limit:
            msg = f"one telemetry record of {len(record)} bytes exceeds the broker's maximum packet size ({limit} bytes of payload)"
            raise ValueError(msg)
        current.append(record)
        size += extra
    if current:
        groups.append(current)
    return groups


def known_instances(spool: Any) -> list[str]:
    text = spool.meta("instances")
    return json.loads(text) if text else []


def remember_instance(spool: Any, instance: str) -> None:
    """Keep the last few instance ids that announced themselves from this spool."""
    known = [item for item in known_instances(spool) if item != instance][-9:]
    with spool.transaction(sync="NORMAL"):
        spool.set_meta("instances", json.dumps([*known, instance]))


def int_field(message: Any, schema: str, name: str) -> int | None:
    if not isinstance(message, dict) or message.get("schema") != schema:
        return None
    value = message.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def records_span(message: Any) -> tuple[list[str], int, int] | None:
    """Return the machines and ``[start_ms, end_ms)`` of a valid records request, else None."""
    if not isinstance(message, dict) or message.get("schema") != RECORDS_REQUEST_SCHEMA:
        return None
    machines, start, end = message.get("machines"), message.get("start"), message.get("end")
    if not isinstance(machines, list) or not 0 < len(machines) <= RECORDS_REQUEST_MAX_MACHINES or not all(isinstance(m, str) for m in machines):
        return None
    try:
        start_ms, end_ms = (int(dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000) for value in (start, end))
    except (AttributeError, TypeError, ValueError):
        return None
    if not 0 < end_ms - start_ms <= RECORDS_REQUEST_MAX_MS:
        return None
    return machines, start_ms, end_ms


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
