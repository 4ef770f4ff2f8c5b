"""Telemetry ingest: check per-minute record batches and store them with COPY, idempotently per machine-minute."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import msgspec
import psycopg

from valuegate.edge.protocol.records import TELEMETRY_SCHEMA, TelemetryBatch

from .verify import GatewayInfo, Topic

__all__ = ("TelemetryError", "CheckedBatch", "check_batch", "store_batches")

Conn = psycopg.AsyncConnection[Any]
_MINUTE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):00Z$")
_STATE_FIELDS = ("running_ms", "idle_ms", "planned_stop_ms", "unplanned_stop_ms", "changeover_ms", "offline_ms")
_COLUMNS = (
    "tenant_id", "site_id", "gateway_id", "time_zone", "machine_id", "minute", *_STATE_FIELDS,
    "produced", "reject", "stops", "reasons", "uncertain_ms",
)  # fmt: skip
_decoder = msgspec.json.Decoder(TelemetryBatch)
_reasons_encoder = msgspec.json.Encoder(order="sorted")
_valid_days: dict[str, bool] = {}


class TelemetryError(ValueError):
    """A telemetry message is not acceptable; ``code`` is a stable reason key."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class CheckedBatch:
    """A telemetry message that passed its checks, with the gateway it belongs to."""

    batch: TelemetryBatch
    gateway: GatewayInfo


def _day_ok(day: str) -> bool:
    known = _valid_days.get(day)
    if known is None:
        try:
            dt.date.fromisoformat(day)
            known = True
        except ValueError:
            known = False
        if len(_valid_days) < 100_000:
            _valid_days[day] = known
    return known


def _check_record(record: Any) -> str | None:
    match = _MINUTE.match(record.minute)
    if match is None or not _day_ok(record.minute[:10]) or int(match[4]) > 23 or int(match[5]) > 59:
        return f"minute {record.minute!r} of machine {record.machine!r} is not a UTC minute start like 2026-01-31T08:15:00Z"
    total = 0
    for name in _STATE_FIELDS:
        value = getattr(record, name)
        if not 0 <= value <= 60_000:
            return f"{name} = {value} of machine {record.machine!r} at {record.minute} is outside 0..60000"
        total += value
    if total > 60_000:
        return f"state milliseconds of machine {record.machine!r} at {record.minute} add up to {total}, more than a minute"
    if record.produced < 0 or record.reject < 0 or record.stops < 0 or not 0 <= record.uncertain_ms <= 60_000:
        return f"counts of machine {record.machine!r} at {record.minute} are invalid: produced {record.produced}, reject {record.reject}, stops {record.stops}, uncertain_ms {record.uncertain_ms}"
    if not record.machine or any(ms < 0 for ms in record.reasons.values()):
        return f"record of machine {record.machine!r} at {record.minute} has an empty machine id or a negative reason time"
    return None


def check_batch(payload: bytes, topic: Topic, gateways: dict[str, GatewayInfo]) -> CheckedBatch:
    """Decode and check one telemetry message; raise :class:`TelemetryError` on the first problem, storing nothing of it."""
    try:
        raw = msgspec.json.decode(payload)
    except msgspec.DecodeError as exc:
        raise TelemetryError("invalid_json", f"payload is not valid JSON: {exc}") from exc
    schema = raw.get("schema") if isinstance(raw, dict) else None
    if schema != TELEMETRY_SCHEMA:
        raise TelemetryError("schema_version", f"unknown telemetry schema version {schema!r}; this service reads {TELEMETRY_SCHEMA!r}")
    try:
        batch = _decoder.decode(payload)
    except msgspec.ValidationError as exc:
        raise TelemetryError("schema", f"telemetry does not match {TELEMETRY_SCHEMA}: {exc}") from exc
    if (batch.tenant, batch.site, batch.gateway) != (topic.tenant, topic.site, topic.gateway):
        msg = f"telemetry names {batch.tenant}/{batch.site}/{batch.gateway} but arrived on {topic.tenant}/{topic.site}/{topic.gateway}"
        raise TelemetryError("topic_mismatch", msg)
    gateway = gateways.get(batch.gateway)
    if gateway is None or (gateway.tenant_id, gateway.site_id) != (batch.tenant, batch.site):
        raise TelemetryError("gateway_unknown", f"gateway {batch.gateway!r} is not registered under tenant {batch.tenant!r}, site {batch.site!r}")
    for record in batch.records:
        problem = _check_record(record)
        if problem is not None:
            raise TelemetryError("invalid_record", problem)
    return CheckedBatch(batch, gateway)


async def store_batches(conn: Conn, batches: list[CheckedBatch]) -> int:
    """Store the records of checked batches in the caller's transaction; return how many were new."""
    rows = sum(len(item.batch.records) for item in batches)
    if not rows:
        return 0
    await conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS telemetry_in (tenant_id text, site_id text, gateway_id text, time_zone text,"
        " machine_id text, minute timestamptz, running_ms integer, idle_ms integer, planned_stop_ms integer,"
        " unplanned_stop_ms integer, changeover_ms integer, offline_ms integer, produced bigint, reject bigint,"
        " stops integer, reasons jsonb, uncertain_ms integer) ON COMMIT DELETE ROWS"
    )
    async with conn.cursor() as cur:
        async with cur.copy(f"COPY telemetry_in ({', '.join(_COLUMNS)}) FROM STDIN") as copy:
            for item in batches:
                gateway = item.gateway
                head = (gateway.tenant_id, gateway.site_id, gateway.gateway_id, gateway.time_zone)
                for r in item.batch.records:
                    await copy.write_row(
                        (*head, r.machine, r.minute, r.running_ms, r.idle_ms, r.planned_stop_ms, r.unplanned_stop_ms,
                         r.changeover_ms, r.offline_ms, r.produced, r.reject, r.stops,
                         _reasons_encoder.encode(r.reasons).decode(), r.uncertain_ms)
                    )  # fmt: skip
        await cur.execute(
            "INSERT INTO telemetry (tenant_id, machine_id, minute, plant_date, site_id, gateway_id, running_ms, idle_ms,"
            " planned_stop_ms, unplanned_stop_ms, changeover_ms, offline_ms, produced, reject, stops, reasons, uncertain_ms)"
            " SELECT tenant_id, machine_id, minute, (minute AT TIME ZONE time_zone)::date, site_id, gateway_id, running_ms,"
            " idle_ms, planned_stop_ms, unplanned_stop_ms, changeover_ms, offline_ms, produced, reject, stops, reasons, uncertain_ms"
            " FROM telemetry_in ON CONFLICT DO NOTHING"
        )
        inserted = cur.rowcount
        await cur.execute("TRUNCATE telemetry_in")
    return inserted
