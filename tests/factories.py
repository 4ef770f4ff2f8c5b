"""Builders of valid protocol objects for tests: claims, signed voucher chains, minute records."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from valuegate.edge.protocol import voucher as v
from valuegate.edge.protocol.evidence import evidence_digest
from valuegate.edge.protocol.records import RECORD_SCHEMA, MinuteRecord, minute_iso


def minute_records(machine: str, start: dt.datetime, minutes: int, *, running_ms: int = 50_000, stop_ms: int = 10_000) -> list[MinuteRecord]:
    """Return ``minutes`` consecutive records of ``machine`` from ``start`` (UTC), each with a stop."""
    first_ms = int(start.timestamp() * 1000)
    return [
        MinuteRecord(
            machine=machine,
            minute=minute_iso(first_ms + i * 60_000),
            running_ms=running_ms,
            idle_ms=0,
            planned_stop_ms=0,
            unplanned_stop_ms=stop_ms,
            changeover_ms=0,
            offline_ms=60_000 - running_ms - stop_ms,
            produced=10,
            reject=0,
            stops=1 if stop_ms else 0,
            reasons={"jam": stop_ms} if stop_ms else {},
            uncertain_ms=0,
        )
        for i in range(minutes)
    ]


def make_claims(
    *,
    seq: int,
    prev: str | None,
    gateway: str = "gw-1",
    tenant: str = "acme",
    site: str = "plant-1",
    contract: str = "C-1",
    anchor: str = "line-oee",
    plant_date: dt.date = dt.date(2024, 5, 6),
    point: float = 1.5,
    low: float = 1.0,
    high: float = 2.0,
    records: list[MinuteRecord] | None = None,
    issued_at: str | None = None,
    **reporting: Any,
) -> v.Claims:
    """Return claims for one OEE-points voucher; keyword arguments override reporting fields."""
    start = dt.datetime.combine(plant_date, dt.time(), tzinfo=dt.UTC)
    end = start + dt.timedelta(days=1)
    records = records if records is not None else minute_records("m-1", start, 3)
    root, count = evidence_digest(records)
    fields: dict[str, Any] = {
        "value": 60.0 + point,
        "planned_busy_min": 480.0,
        "run_min": 400.0,
        "unplanned_downtime_min": 30.0,
        "availability": 0.833333,
        "effectiveness": 0.9,
        "quality": 0.98,
        "oee": 0.735,
        "running_day": True,
    }
    fields.update(reporting)
    return v.Claims(
        schema=v.SCHEMA,
        voucher_id=v.voucher_id(gateway, seq),
        tenant=tenant,
        site=site,
        gateway=gateway,
        seq=seq,
        prev=prev,
        contract=contract,
        anchor=anchor,
        machines=[v.MachineRef(id="m-1", mapping_hash="sha256:" + "ab" * 32, time_source="plc", ideal_cycle_time_s=2.0)],
        period=v.Period(
            start=start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            end=end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            plant_date=plant_date.isoformat(),
            time_zone="UTC",
        ),
        metric=v.Metric(name="oee_points", unit="percentage point", better="higher"),
        reporting=v.Reporting(**fields),
        baseline=v.Baseline(value=60.0, days=10, first_date="2024-04-01", last_date="2024-04-14", digest="sha256:" + "cd" * 32),
        delta=v.Delta(quantity="oee_points", point=point, low=low, high=high, confidence=0.95, method="block-bootstrap-days", resamples=2000, seed=7),
        sufficiency=v.Sufficiency(ok=True, reasons=[], covered_min=480.0),
        evidence=v.Evidence(merkle_root=root, records=count, record_schema=RECORD_SCHEMA),
        issued_at=issued_at or end.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def voucher_chain(key: Ed25519PrivateKey, count: int, *, first_seq: int = 1, prev: str | None = None, **claims: Any) -> list[dict[str, Any]]:
    """Return ``count`` signed vouchers with consecutive sequence numbers and linked ``prev`` hashes."""
    documents = []
    for offset in range(count):
        seq = first_seq + offset
        day = dt.date(2024, 5, 6) + dt.timedelta(days=offset)
        document = v.build_voucher(make_claims(seq=seq, prev=prev, plant_date=day, **claims), key)
        prev = v.voucher_hash(document)
        documents.append(document)
    return documents
