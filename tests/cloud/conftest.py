"""Fixtures for the cloud tests: a migrated database, two registered tenants and real signed vouchers."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from valuegate.cloud import db, store
from valuegate.edge.protocol import voucher as v
from valuegate.edge.protocol.evidence import evidence_digest
from valuegate.edge.protocol.keys import public_key_multibase
from valuegate.edge.protocol.records import TELEMETRY_SCHEMA, MinuteRecord, TelemetryBatch
from valuegate.edge.protocol.telemetry_proof import sign_telemetry

from .mqtt_helpers import Probe

import msgspec

PLANT_ZONE = "Asia/Shanghai"


def iso(stamp: dt.datetime) -> str:
    return stamp.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def minute_records(machine: str, start: dt.datetime, minutes: int, *, produced: int = 10) -> list[MinuteRecord]:
    """Deterministic per-minute records: mostly running, an unplanned stop every 17th minute."""
    out = []
    for i in range(minutes):
        stamp = start + dt.timedelta(minutes=i)
        stopped = i % 17 == 5
        out.append(
            MinuteRecord(
                machine=machine,
                minute=stamp.strftime("%Y-%m-%dT%H:%M:00Z"),
                running_ms=0 if stopped else 60_000,
                idle_ms=0,
                planned_stop_ms=0,
                unplanned_stop_ms=60_000 if stopped else 0,
                changeover_ms=0,
                offline_ms=0,
                produced=0 if stopped else produced,
                reject=1 if i % 50 == 0 and not stopped else 0,
                stops=1 if stopped else 0,
                reasons={"E12": 60_000} if stopped else {},
                uncertain_ms=0,
            )
        )
    return out


@dataclass
class Gateway:
    """A registered gateway with its signing key, issuing a valid chain of vouchers."""

    tenant: str
    site: str
    gateway: str
    key: Ed25519PrivateKey
    contract: str = "c-2026"
    anchor: str = "oee-line1"
    machines: tuple[str, ...] = ("m1",)
    issued: list[dict[str, Any]] = field(default_factory=list)

    def claims(self, seq: int, prev: str | None, *, day: dt.date | None = None, point: float = 3.5, records: list[MinuteRecord] | None = None, **changes: Any) -> v.Claims:
        day = day or dt.date(2026, 3, 1) + dt.timedelta(days=seq - 1)
        start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC) - dt.timedelta(hours=8)
        root, count = evidence_digest(msgspec.to_builtins(r) for r in records) if records is not None else ("sha256:" + "ab" * 32, 1380)
        claims = v.Claims(
            schema=v.SCHEMA, voucher_id=v.voucher_id(self.gateway, seq), tenant=self.tenant, site=self.site, gateway=self.gateway,
            seq=seq, prev=prev, contract=self.contract, anchor=self.anchor,
            machines=[v.MachineRef(id=m, mapping_hash="sha256:" + "0" * 64, time_source="plc", ideal_cycle_time_s=5.0) for m in self.machines],
            period=v.Period(start=iso(start), end=iso(start + dt.timedelta(days=1)), plant_date=day.isoformat(), time_zone=PLANT_ZONE),
            metric=v.Metric(name="oee_points", unit="percentage_points", better="higher"),
            reporting=v.Reporting(value=71.25, planned_busy_min=1380.0, run_min=1300.0, unplanned_downtime_min=80.0, availability=0.942,
                                  effectiveness=0.8, quality=0.99, oee=0.7125, running_day=True),
            baseline=v.Baseline(value=67.75, days=30, first_date="2026-01-01", last_date="2026-01-30", digest="sha256:" + "cd" * 32),
            delta=v.Delta(quantity="oee_points", point=point, low=point - 1.25, high=point + 1.0, confidence=0.95, method="bootstrap", resamples=2000, seed=7),
            sufficiency=v.Sufficiency(ok=True, reasons=[], covered_min=1380.0),
            evidence=v.Evidence(merkle_root=root, records=count, record_schema="valuegate/minute/v1"),
            issued_at=iso(start + dt.timedelta(days=1, minutes=5)),
        )  # fmt: skip
        return msgspec.structs.replace(claims, **changes) if changes else claims

    def next_voucher(self, **kwargs: Any) -> dict[str, Any]:
        seq = len(self.issued) + 1
        prev = v.voucher_hash(self.issued[-1]) if self.issued else None
        document = v.build_voucher(self.claims(seq, prev, **kwargs), self.key)
        self.issued.append(document)
        return document

    def topic(self, kind: str) -> str:
        return f"valuegate/v1/{self.tenant}/{self.site}/{self.gateway}/{kind}"

    def telemetry(self, records: list[MinuteRecord], time_zones: dict[str, str] | None = None) -> bytes:
        batch = TelemetryBatch(
            schema=TELEMETRY_SCHEMA, tenant=self.tenant, site=self.site, gateway=self.gateway, records=records, time_zones=time_zones or {}
        )
        return msgspec.json.encode(batch)

    def telemetry_properties(self, payload: bytes) -> list[tuple[str, str]]:
        """Return the MQTT user properties that sign ``payload`` on this gateway's telemetry topic, as its agent does."""
        return sign_telemetry(self.key, self.topic("telemetry"), payload)


@pytest.fixture
def cloud_dsn(database: str) -> str:
    """A fresh database with every migration applied."""
    db.migrate(database)
    return database


async def register(dsn: str, tenant: str, site: str, gateway: str, key: Ed25519PrivateKey, **key_args: Any) -> int:
    async with await psycopg.AsyncConnection.connect(dsn, options=db.UTC_OPTIONS) as conn:
        async with conn.transaction():
            try:
                await store.create_tenant(conn, tenant, tenant.title())
            except store.Conflict:
                pass
        async with conn.transaction():
            try:
                await store.create_site(conn, tenant, site, f"{site} plant", PLANT_ZONE)
            except store.Conflict:
                pass
        async with conn.transaction():
            await store.create_gateway(conn, tenant, site, gateway)
            key_args.setdefault("valid_from", dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
            row = await store.add_gateway_key(conn, tenant, gateway, public_key_multibase(key.public_key()), **key_args)
    return int(row["id"])


@pytest.fixture
def two_tenants(cloud_dsn: str) -> tuple[Gateway, Gateway]:
    """Tenant ``acme`` with gateway ``gw-a1`` and tenant ``globex`` with gateway ``gw-g1``, each with a registered key."""
    acme = Gateway("acme", "plant1", "gw-a1", Ed25519PrivateKey.generate())
    globex = Gateway("globex", "works", "gw-g1", Ed25519PrivateKey.generate(), contract="g-2026", anchor="avail")
    for gw in (acme, globex):
        asyncio.run(register(cloud_dsn, gw.tenant, gw.site, gw.gateway, gw.key))
    return acme, globex


def contract_yaml(tenant: str = "acme", contract_id: str = "c-2026", *, anchor: str = "oee-line1", price: str = "100.00", cap: str | None = None) -> str:
    """A small contract of one OEE anchor priced per OEE point per running day."""
    cap_line = f"\n    cap: '{cap}'" if cap else ""
    return f"""schema: valuegate/contract/v1
id: {contract_id}
tenant: {tenant}
customer: Plant customer
start: 2026-01-01
end: 2026-12-31
currency: CNY
anchors:
  - id: {anchor}
    scope: [m1]
    metric: oee_points
    baseline: {{first_date: 2026-01-01, last_date: 2026-01-30, min_days: 1}}
    reporting: {{first_date: 2026-02-01, last_date: 2026-12-31}}
    price: {{per: oee_point_day, amount: '{price}'}}{cap_line}
"""


async def store_direct(dsn: str, documents: list[dict[str, Any]], *, topic_of: Gateway) -> Any:
    """Check and store vouchers as a worker would, without a broker."""
    from valuegate.cloud.chain import load_gateways, store_vouchers
    from valuegate.cloud.verify import check_voucher, parse_topic

    topic = parse_topic(topic_of.topic("vouchers"))
    async with await psycopg.AsyncConnection.connect(dsn, options=db.UTC_OPTIONS) as conn:
        async with conn.transaction():
            gateways = await load_gateways(conn, {topic_of.gateway})
            now = dt.datetime.now(dt.UTC)
            checked = [check_voucher(msgspec.json.encode(d), topic, gateways, now=now, clock_skew=dt.timedelta(minutes=5)) for d in documents]
            return await store_vouchers(conn, checked, gateways)


async def make_user(dsn: str, tenant: str, username: str, roles: list[str], password: str | None = None) -> str:
    """Create a user and return an API token for it."""
    from valuegate.cloud import auth

    async with await psycopg.AsyncConnection.connect(dsn, options=db.UTC_OPTIONS) as conn:
        async with conn.transaction():
            user = await auth.create_user(conn, tenant, username, password, roles)
            _row, token = await auth.issue_token(conn, tenant, user["id"], "tests")
    return token


@pytest.fixture
def probe(mosquitto: Any) -> Any:
    """A plain MQTT client on the test broker that publishes as gateways do and collects acks and resend requests."""
    client = Probe(mosquitto.port)
    yield client
    client.close()
