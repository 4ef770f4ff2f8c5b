"""Telemetry ingest: check per-minute record batches and store them with COPY, idempotently per machine-minute."""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import psycopg
from psycopg.types.json import set_json_dumps

from valuegate.edge.protocol.records import TELEMETRY_SCHEMA
from valuegate.edge.protocol.telemetry_proof import KEY_PROPERTY, SIGNATURE_PROPERTY, TelemetrySignature, verify_telemetry

from .verify import UNKNOWN_KEY_ADVICE, GatewayInfo, Topic, key_text, mismatch_reason

__all__ = ("TelemetryError", "CheckedBatch", "check_batch", "check_signature", "store_batches")

Conn = psycopg.AsyncConnection[Any]
_valid_days: dict[str, bool] = {}

# The record of valuegate.edge.protocol.records with the ranges the database columns need,
# checked by msgspec while it decodes: state and reason times 0..60000 ms, counts that fit
# bigint (stops: integer), and a UTC minute start. Field names match MinuteRecord exactly.
_Ms = Annotated[int, msgspec.Meta(ge=0, le=60_000)]
_Count = Annotated[int, msgspec.Meta(ge=0, lt=2**62)]


class _Record(msgspec.Struct, forbid_unknown_fields=True):
    machine: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    minute: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:00Z$")]
    running_ms: _Ms
    idle_ms: _Ms
    planned_stop_ms: _Ms
    unplanned_stop_ms: _Ms
    changeover_ms: _Ms
    offline_ms: _Ms
    produced: _Count
    reject: _Count
    stops: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
    reasons: dict[str, _Ms]
    uncertain_ms: _Ms


class _Batch(msgspec.Struct, forbid_unknown_fields=True):
    schema: str
    tenant: str
    site: str
    gateway: str
    records: list[_Record]
    time_zones: dict[str, str] = {}


class _SchemaOnly(msgspec.Struct):
    schema: Any = None


_decoder = msgspec.json.Decoder(_Batch)
# Reads only the schema field and skips the rest, so an unknown version is rejected before a full decode.
_schema_decoder = msgspec.json.Decoder(_SchemaOnly)


class TelemetryError(ValueError):
    """A telemetry message is not acceptable; ``code`` is a stable reason key."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class CheckedBatch:
    """A telemetry message that passed its checks, with the gateway it belongs to."""

    batch: _Batch
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


def _check_record(record: _Record) -> str | None:
    if not _day_ok(record.minute[:10]):
        return f"minute {record.minute!r} of machine {record.machine!r} is not a calendar date; write a UTC minute start like 2026-01-31T08:15:00Z"
    states = record.running_ms + record.idle_ms + record.planned_stop_ms + record.unplanned_stop_ms + record.changeover_ms + record.offline_ms
    if states > 60_000:
        return f"state milliseconds of machine {record.machine!r} at {record.minute} add up to {states}, more than one minute (60000)"
    return None


def check_batch(payload: bytes, topic: Topic, gateways: dict[str, GatewayInfo]) -> CheckedBatch:
    """Decode and check one telemetry message; raise :class:`TelemetryError` on the first problem, storing nothing of it."""
    try:
        schema = _schema_decoder.decode(payload).schema
    except msgspec.ValidationError:
        schema = None
    except msgspec.DecodeError as exc:
        raise TelemetryError("invalid_json", f"payload is not valid JSON: {exc}") from exc
    if b"\\u0000" in payload:
        raise TelemetryError("invalid_json", "payload contains a NUL character (\\u0000), which PostgreSQL text cannot store; remove it from machine ids and reason codes")
    if schema != TELEMETRY_SCHEMA:
        raise TelemetryError("schema_version", f"unknown telemetry schema version {schema!r}; this service reads {TELEMETRY_SCHEMA!r}")
    try:
        batch = _decoder.decode(payload)
    except msgspec.ValidationError as exc:
        # Out-of-range values inside a record are invalid records; anything else is the wrong shape.
        code = "invalid_record" if "$.records[" in str(exc) and ("Expected `int` >=" in str(exc) or "Expected `int` <" in str(exc) or "match pattern" in str(exc) or "length" in str(exc)) else "schema"
        raise TelemetryError(code, f"telemetry does not match {TELEMETRY_SCHEMA}: {exc}") from exc
    if (batch.tenant, batch.site, batch.gateway) != (topic.tenant, topic.site, topic.gateway):
        raise TelemetryError("topic_mismatch", mismatch_reason("telemetry", (batch.tenant, batch.site, batch.gateway), topic))
    gateway = gateways.get(batch.gateway)
    if gateway is None or (gateway.tenant_id, gateway.site_id) != (batch.tenant, batch.site):
        raise TelemetryError("gateway_unknown", f"gateway {batch.gateway!r} is not registered under tenant {batch.tenant!r}, site {batch.site!r}")
    for machine, zone in batch.time_zones.items():
        if not _zone_ok(zone):
            raise TelemetryError("schema", f"time zone {zone!r} of machine {machine!r} is not an IANA time zone name such as 'Asia/Shanghai'")
    for record in batch.records:
        problem = _check_record(record)
        if problem is not None:
            raise TelemetryError("invalid_record", problem)
    return CheckedBatch(batch, gateway)


def check_signature(checked: CheckedBatch, topic: str, payload: bytes, signature: TelemetrySignature | None, *, now: dt.datetime) -> None:
    """Raise :class:`TelemetryError` unless a registered, unrevoked key of the batch's gateway signed ``payload`` on ``topic``.

    Key validity windows are not checked: they bound when vouchers were
    issued, while telemetry is signed when it is sent, possibly days later.
    """
    gateway = checked.gateway
    if signature is None:
        msg = (
            f"telemetry of gateway {gateway.gateway_id!r} carries no signature (MQTT v5 user properties {KEY_PROPERTY!r} and"
            f" {SIGNATURE_PROPERTY!r}, one of each); publish it with a valuegate edge agent that signs telemetry"
        )
        raise TelemetryError("signature_missing", msg)
    public_key, value = signature
    key = next((k for k in gateway.keys if k.public_key == public_key), None)
    if key is None:
        raise TelemetryError("key_unknown", f"telemetry is signed by key {key_text(public_key)}, which is not registered for gateway {gateway.gateway_id!r}; {UNKNOWN_KEY_ADVICE}")
    if key.revoked_at is not None and key.revoked_at <= now:
        raise TelemetryError("key_revoked", f"telemetry is signed by key {key.key_id} of gateway {gateway.gateway_id!r}, revoked at {key.revoked_at.isoformat()}")
    if not verify_telemetry(public_key, value, topic, payload):
        raise TelemetryError("signature_invalid", f"the telemetry signature by key {key.key_id} of gateway {gateway.gateway_id!r} does not verify")


_COLUMNS = (
    "tenant_id, site_id, gateway_id, machine_id, minute, plant_date, running_ms, idle_ms, planned_stop_ms,"
    " unplanned_stop_ms, changeover_ms, offline_ms, produced, reject, stops, reasons, uncertain_ms"
)
_TYPES = ["text", "text", "text", "text", "timestamptz", "date", *["int4"] * 6, "int8", "int8", "int4", "jsonb", "int4"]


@functools.lru_cache(maxsize=512)
def _zone_ok(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ValueError, ZoneInfoNotFoundError):
        return False
    return True


class _PlantDates:
    """Plant dates of UTC minutes in one time zone, computed once per UTC hour without an offset change."""

    def __init__(self, time_zone: str) -> None:
        self.zone = ZoneInfo(time_zone)
        self.hours: dict[str, dt.date | None] = {}

    def __call__(self, minute: str, stamp: dt.datetime) -> dt.date:
        hour = minute[:13]
        if hour not in self.hours:
            first = stamp.replace(minute=0).astimezone(self.zone)
            last = stamp.replace(minute=59).astimezone(self.zone)
            same = first.utcoffset() == last.utcoffset() and first.date() == last.date()
            self.hours[hour] = first.date() if same else None
        known = self.hours[hour]
        return known if known is not None else stamp.astimezone(self.zone).date()


async def _copy(conn: Conn, table: str, batches: list[CheckedBatch]) -> set[tuple[str, str, dt.date]]:
    """Copy the records of ``batches`` into ``table``; return the ``(tenant, gateway, plant date)`` keys they cover."""
    dates: dict[str, _PlantDates] = {}
    keys: set[tuple[str, str, dt.date]] = set()
    async with conn.cursor() as cur, cur.copy(f"COPY {table} ({_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(_TYPES)
        for item in batches:
            gateway = item.gateway
            zones = item.batch.time_zones
            for r in item.batch.records:
                zone = zones.get(r.machine, gateway.time_zone)
                plant_date = dates.setdefault(zone, _PlantDates(zone))
                stamp = dt.datetime.fromisoformat(r.minute)
                day = plant_date(r.minute, stamp)
                keys.add((gateway.tenant_id, gateway.gateway_id, day))
                await copy.write_row(
                    (gateway.tenant_id, gateway.site_id, gateway.gateway_id, r.machine, stamp, day, r.running_ms,
                     r.idle_ms, r.planned_stop_ms, r.unplanned_stop_ms, r.changeover_ms, r.offline_ms, r.produced, r.reject, r.stops,
                     r.reasons, r.uncertain_ms)
                )  # fmt: skip
    return keys


async def _note_arrivals(conn: Conn, keys: set[tuple[str, str, dt.date]]) -> None:
    """Mark each gateway plant date as having new telemetry, so the pending scan tries its vouchers first.

    ``clock_timestamp()`` and not ``now()``: the scan deletes only the marks it
    read, and a later batch must leave a later time even inside one long transaction.
    Keys go in sorted order, so two transactions lock shared rows in the same order.
    """
    tenants, gateways, days = zip(*sorted(keys), strict=True)
    await conn.execute(
        "INSERT INTO telemetry_arrivals (tenant_id, gateway_id, plant_date, noted_at)"
        " SELECT tenant_id, gateway_id, plant_date, clock_timestamp() FROM unnest(%s::text[], %s::text[], %s::date[]) AS k(tenant_id, gateway_id, plant_date)"
        " ORDER BY 1, 2, 3 ON CONFLICT (tenant_id, gateway_id, plant_date) DO UPDATE SET noted_at = excluded.noted_at",
        (list(tenants), list(gateways), list(days)),
    )


async def store_batches(conn: Conn, batches: list[CheckedBatch]) -> int:
    """Store the records of checked batches in the caller's transaction; return how many were new.

    New minutes, the usual case, go straight into ``telemetry`` with a binary
    COPY. When any minute is stored already (a resend), that COPY fails as a
    whole, and the rows go through a staging table and ``ON CONFLICT DO NOTHING``.
    A batch that stored a new row also marks its gateway plant dates in
    ``telemetry_arrivals`` (see :func:`valuegate.cloud.reproduce.reproduce_pending`).
    """
    rows = sum(len(item.batch.records) for item in batches)
    if not rows:
        return 0
    set_json_dumps(_json_dumps, context=conn)
    try:
        async with conn.transaction():
            keys = await _copy(conn, "telemetry", batches)
    except psycopg.errors.UniqueViolation:
        pass
    else:
        await _note_arrivals(conn, keys)
        return rows
    await conn.execute("CREATE TEMP TABLE IF NOT EXISTS telemetry_in (LIKE telemetry) ON COMMIT DELETE ROWS")
    keys = await _copy(conn, "telemetry_in", batches)
    async with conn.cursor() as cur:
        await cur.execute(f"INSERT INTO telemetry ({_COLUMNS}) SELECT {_COLUMNS} FROM telemetry_in ON CONFLICT DO NOTHING")
        inserted = cur.rowcount
        await cur.execute("TRUNCATE telemetry_in")
    if inserted:
        await _note_arrivals(conn, keys)
    return inserted


def _json_dumps(value: object) -> bytes:
    return msgspec.json.encode(value)
