"""Reproduction of vouchers from stored records with the real kernels and methodology, and the fast canonical form."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import hypothesis
import msgspec
import psycopg
import pytest
import rfc8785
from hypothesis import strategies as st

from valuegate.cloud import contracts
from valuegate.cloud.chain import load_gateways
from valuegate.cloud.db import UTC_OPTIONS
from valuegate.cloud.reproduce import evidence_of, reproduce_pending
from valuegate.cloud.telemetry import check_batch, store_batches
from valuegate.cloud.verify import parse_topic
from valuegate.cloud.signature import canonical_fast, voucher_hash_fast
from valuegate.edge import methodology
from valuegate.edge.kernels import kpis, totals_from_records
from valuegate.edge.protocol import voucher as v
from valuegate.edge.protocol.contract import parse_contract
from valuegate.edge.protocol.evidence import evidence_digest
from valuegate.edge.protocol.records import TELEMETRY_SCHEMA, MinuteRecord, TelemetryBatch

import yaml

from .conftest import Gateway, contract_yaml, minute_records, store_direct


def plant_day_start(day: dt.date) -> dt.datetime:
    # Asia/Shanghai is UTC+8 all year.
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC) - dt.timedelta(hours=8)


def day_records(day: dt.date, produced: int) -> list[MinuteRecord]:
    return minute_records("m1", plant_day_start(day), 1440, produced=produced)


def computed_claims(gateway: Gateway, reporting_day: dt.date, baseline_days: list[dt.date], *, ideal_s: float = 5.0, seq: int = 1,
                    prev: str | None = None) -> tuple[v.Claims, list[MinuteRecord]]:
    """Claims computed exactly as an edge gateway would, from the records the test then stores, at the ideal cycle time ``ideal_s``."""
    anchor = parse_contract(yaml.safe_load(contract_yaml())).anchor("oee-line1")
    ideal = {"m1": ideal_s}
    baseline = methodology.build_baseline(anchor, [(d.isoformat(), kpis(totals_from_records(day_records(d, 9), ideal_cycle_time_s=ideal))) for d in baseline_days])
    records = day_records(reporting_day, 11)
    reporting, delta, sufficiency = methodology.value_for_day(anchor, baseline, reporting_day.isoformat(), kpis(totals_from_records(records, ideal_cycle_time_s=ideal)))
    claims = gateway.claims(seq, prev, day=reporting_day, records=records)
    machines = [msgspec.structs.replace(machine, ideal_cycle_time_s=ideal_s) for machine in claims.machines]
    claims = msgspec.structs.replace(claims, reporting=reporting, delta=delta, sufficiency=sufficiency, baseline=baseline.claim(), machines=machines)
    return claims, records


async def store_records(dsn: str, records: list[MinuteRecord]) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, options=UTC_OPTIONS) as conn:
        async with conn.transaction():
            gateways = await load_gateways(conn, {"gw-a1"})
            batch = TelemetryBatch(schema=TELEMETRY_SCHEMA, tenant="acme", site="plant1", gateway="gw-a1", records=records)
            topic = parse_topic("valuegate/v1/acme/plant1/gw-a1/telemetry")
            await store_batches(conn, [check_batch(msgspec.json.encode(batch), topic, gateways)])


async def verdicts(dsn: str) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn, options=UTC_OPTIONS) as conn:
        await reproduce_pending(conn)
        return await (await conn.execute("SELECT seq, reproduced, reproduce_detail FROM voucher_chain ORDER BY seq")).fetchall()


@pytest.mark.postgres
async def test_voucher_reproduced_from_records(cloud_dsn: str, two_tenants: tuple[Gateway, Gateway]) -> None:
    acme, _ = two_tenants
    base = [dt.date(2026, 1, 5), dt.date(2026, 1, 6)]
    claims, records = computed_claims(acme, dt.date(2026, 3, 1), base)
    document = v.build_voucher(claims, acme.key)
    await store_direct(cloud_dsn, [document], topic_of=acme)

    # Records missing: the voucher waits.
    [(seq, reproduced, detail)] = await verdicts(cloud_dsn)
    assert (seq, reproduced) == (1, None)
    assert "waiting for records" in detail

    await store_records(cloud_dsn, records + [r for d in base for r in day_records(d, 9)])
    # Contract missing: the evidence matches, the numbers cannot be checked yet.
    async with await psycopg.AsyncConnection.connect(cloud_dsn, options=UTC_OPTIONS) as conn:
        await conn.execute("UPDATE voucher_chain SET reproduced_at = NULL")
        await conn.commit()
    [(_, reproduced, detail)] = await verdicts(cloud_dsn)
    assert reproduced is None
    assert "not uploaded" in detail

    async with await psycopg.AsyncConnection.connect(cloud_dsn, options=UTC_OPTIONS) as conn:
        async with conn.transaction():
            await contracts.upload_contract(conn, "acme", contract_yaml())
        await conn.execute("UPDATE voucher_chain SET reproduced_at = NULL")
        await conn.commit()
    [(_, reproduced, detail)] = await verdicts(cloud_dsn)
    assert reproduced is True, detail
    assert "baseline rebuilt" in detail


@pytest.mark.postgres
async def test_baseline_at_voucher_cycle_time(cloud_dsn: str, two_tenants: tuple[Gateway, Gateway]) -> None:
    """A tag-map change of the ideal cycle time between two days: each voucher's baseline is rebuilt at the cycle time it names."""
    acme, _ = two_tenants
    base = [dt.date(2026, 1, 5), dt.date(2026, 1, 6)]
    documents, records, prev = [], [r for d in base for r in day_records(d, 9)], None
    for seq, (day, ideal_s) in enumerate([(dt.date(2026, 3, 1), 5.0), (dt.date(2026, 3, 2), 4.0)], start=1):
        claims, day_rows = computed_claims(acme, day, base, ideal_s=ideal_s, seq=seq, prev=prev)
        documents.append(v.build_voucher(claims, acme.key))
        records += day_rows
        prev = v.voucher_hash(documents[-1])
    assert documents[0]["credentialSubject"]["baseline"]["value"] != documents[1]["credentialSubject"]["baseline"]["value"]
    await store_direct(cloud_dsn, documents, topic_of=acme)
    await store_records(cloud_dsn, records)
    async with await psycopg.AsyncConnection.connect(cloud_dsn, options=UTC_OPTIONS) as conn:
        async with conn.transaction():
            await contracts.upload_contract(conn, "acme", contract_yaml())
    rows = await verdicts(cloud_dsn)
    assert [(seq, reproduced) for seq, reproduced, _ in rows] == [(1, True), (2, True)], rows


@pytest.mark.postgres
async def test_wrong_numbers_not_reproduced(cloud_dsn: str, two_tenants: tuple[Gateway, Gateway]) -> None:
    acme, _ = two_tenants
    base = [dt.date(2026, 1, 5)]
    claims, records = computed_claims(acme, dt.date(2026, 3, 1), base)
    inflated = msgspec.structs.replace(claims, delta=msgspec.structs.replace(claims.delta, point=claims.delta.point + 5))
    await store_direct(cloud_dsn, [v.build_voucher(inflated, acme.key)], topic_of=acme)
    await store_records(cloud_dsn, records + day_records(base[0], 9))
    async with await psycopg.AsyncConnection.connect(cloud_dsn, options=UTC_OPTIONS) as conn:
        async with conn.transaction():
            await contracts.upload_contract(conn, "acme", contract_yaml())
    [(_, reproduced, detail)] = await verdicts(cloud_dsn)
    assert reproduced is False
    assert "delta" in detail


@pytest.mark.postgres
async def test_changed_record_breaks_evidence(cloud_dsn: str, two_tenants: tuple[Gateway, Gateway]) -> None:
    acme, _ = two_tenants
    claims, records = computed_claims(acme, dt.date(2026, 3, 1), [dt.date(2026, 1, 5)])
    await store_direct(cloud_dsn, [v.build_voucher(claims, acme.key)], topic_of=acme)
    records[100] = msgspec.structs.replace(records[100], produced=records[100].produced + 1)
    await store_records(cloud_dsn, records)
    [(_, reproduced, detail)] = await verdicts(cloud_dsn)
    assert reproduced is False
    assert "evidence digest" in detail


def test_evidence_matches_protocol() -> None:
    records = minute_records("m1", dt.datetime(2026, 3, 1, tzinfo=dt.UTC), 37)
    records[3] = msgspec.structs.replace(records[3], reasons={"E12": 30_000, "F\u00fc\u00df": 30_000})
    assert evidence_of(records) == evidence_digest(msgspec.to_builtins(r) for r in records)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)


@hypothesis.settings(max_examples=300, deadline=None, database=None, derandomize=True)
@hypothesis.given(json_values)
def test_fast_canonical_equals_rfc8785(value: Any) -> None:
    assert canonical_fast(value) == rfc8785.dumps(value)


def test_fast_hash_equals_voucher_hash() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    gateway = Gateway("acme", "plant1", "gw-a1", Ed25519PrivateKey.generate())
    document = json.loads(json.dumps(gateway.next_voucher(point=1e-7)))
    assert voucher_hash_fast(document) == v.voucher_hash(document)


@hypothesis.settings(max_examples=200, deadline=None, database=None, derandomize=True)
@hypothesis.given(st.binary(max_size=80))
def test_base58_decoder_matches_library(data: bytes) -> None:
    import base58

    from valuegate.cloud.signature import _b58decode

    assert _b58decode(base58.b58encode(data).decode()) == data


def test_telemetry_record_fields_match_protocol() -> None:
    from valuegate.cloud.telemetry import _Record

    assert _Record.__struct_fields__ == MinuteRecord.__struct_fields__


def test_number_fields_cover_claims_schema() -> None:
    """Every int or float field of the claims is listed for the fast canonical form."""
    from msgspec import inspect

    from valuegate.cloud.signature import _MACHINE_NUMBER_FIELDS, _NUMBER_FIELDS

    def numeric(struct: Any) -> set[str]:
        found = set()
        for field in inspect.type_info(struct).fields:
            kinds = field.type.types if isinstance(field.type, inspect.UnionType) else (field.type,)
            if any(isinstance(kind, (inspect.IntType, inspect.FloatType)) for kind in kinds):
                found.add(field.name)
        return found

    claims_fields = {field.name: field.type for field in inspect.type_info(v.Claims).fields}
    assert numeric(v.Claims) == {"seq"}
    for name, kind in claims_fields.items():
        if isinstance(kind, inspect.StructType):
            assert numeric(kind.cls) == set(_NUMBER_FIELDS.get(name, ())), name
    assert numeric(v.MachineRef) == set(_MACHINE_NUMBER_FIELDS)


async def pending_pass(dsn: str, **waits: float) -> Any:
    async with await psycopg.AsyncConnection.connect(dsn, options=UTC_OPTIONS) as conn:
        await conn.execute("UPDATE voucher_chain SET reproduced_at = NULL")
        result = await reproduce_pending(conn, **waits)
        rows = await (await conn.execute("SELECT reproduced, reproduce_detail FROM voucher_chain")).fetchall()
    return result, rows


@pytest.mark.postgres
async def test_no_baseline_record_asks_before_claimed_value(cloud_dsn: str, two_tenants: tuple[Gateway, Gateway]) -> None:
    """No record of the baseline period stored (all rejected before the key was registered): ask for them, and only after the wait accept the claimed baseline."""
    acme, _ = two_tenants
    base = [dt.date(2026, 1, 5), dt.date(2026, 1, 6)]
    claims, records = computed_claims(acme, dt.date(2026, 3, 1), base)
    await store_direct(cloud_dsn, [v.build_voucher(claims, acme.key)], topic_of=acme)
    await store_records(cloud_dsn, records)
    async with await psycopg.AsyncConnection.connect(cloud_dsn, options=UTC_OPTIONS) as conn:
        async with conn.transaction():
            await contracts.upload_contract(conn, "acme", contract_yaml())

    result, [(reproduced, detail)] = await pending_pass(cloud_dsn, records_wait_s=0)
    assert reproduced is None
    assert detail == "waiting for baseline records: no record of the baseline 2026-01-01..2026-01-30 is stored"
    [(site, span)] = result.missing_baselines
    assert (site, span.gateway, span.machines) == ("plant1", "gw-a1", ("m1",))
    assert (span.start, span.end) == (plant_day_start(dt.date(2026, 1, 1)), plant_day_start(dt.date(2026, 1, 31)))

    _, [(reproduced, detail)] = await pending_pass(cloud_dsn, records_wait_s=0, baseline_wait_s=0)
    assert reproduced is True
    assert detail == "evidence digest and numbers reproduced with the voucher's baseline value (baseline records not stored)"


@pytest.mark.postgres
async def test_missing_baseline_records_wait_then_count(cloud_dsn: str, two_tenants: tuple[Gateway, Gateway]) -> None:
    """Baseline records the broker lost: the voucher waits and its baseline period is asked for; once they arrive it reproduces."""
    acme, _ = two_tenants
    base = [dt.date(2026, 1, 5), dt.date(2026, 1, 6)]
    claims, records = computed_claims(acme, dt.date(2026, 3, 1), base)
    await store_direct(cloud_dsn, [v.build_voucher(claims, acme.key)], topic_of=acme)
    second_day = day_records(base[1], 9)
    await store_records(cloud_dsn, records + day_records(base[0], 9) + second_day[:900])  # 540 minutes of the second day lost
    async with await psycopg.AsyncConnection.connect(cloud_dsn, options=UTC_OPTIONS) as conn:
        async with conn.transaction():
            await contracts.upload_contract(conn, "acme", contract_yaml())

    result, [(reproduced, detail)] = await pending_pass(cloud_dsn, records_wait_s=0)
    assert reproduced is None
    # The contract's baseline period is 2026-01-01..2026-01-30; days 5 and 6 have records.
    assert detail.startswith("waiting for baseline records: the baseline rebuilt from the stored records of 2026-01-01..2026-01-30 is ")
    assert result.missing_records == []
    [(site, span)] = result.missing_baselines
    assert (site, span.tenant, span.gateway, span.machines) == ("plant1", "acme", "gw-a1", ("m1",))
    assert (span.start, span.end) == (plant_day_start(dt.date(2026, 1, 1)), plant_day_start(dt.date(2026, 1, 31)))

    # Past the wait, the difference counts.
    _, [(reproduced, detail)] = await pending_pass(cloud_dsn, records_wait_s=0, baseline_wait_s=0)
    assert reproduced is False
    assert detail.startswith("baseline Baseline(")
    async with await psycopg.AsyncConnection.connect(cloud_dsn, options=UTC_OPTIONS) as conn:
        await conn.execute("UPDATE voucher_chain SET reproduced = NULL")
        await conn.commit()

    await store_records(cloud_dsn, second_day[900:])
    result, [(reproduced, detail)] = await pending_pass(cloud_dsn, records_wait_s=0)
    assert reproduced is True, detail
    assert result.missing_baselines == []
