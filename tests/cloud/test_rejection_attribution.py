"""Which rejections count against a contract, and what a tenant learns from a rejection row (real Mosquitto and PostgreSQL)."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from valuegate.cloud import contracts, reports, store
from valuegate.cloud.db import UTC_OPTIONS
from valuegate.cloud.ingest import IngestWorker
from valuegate.cloud.settings import CloudSettings
from valuegate.edge.protocol import voucher as v

from .conftest import Gateway, contract_yaml, minute_records
from .mqtt_helpers import Probe
from .test_ingest import query, wait_for_rows

pytestmark = [pytest.mark.postgres, pytest.mark.mosquitto]

REJECTION_SQL = "SELECT code, tenant_id, voucher_id, contract_id, reason FROM rejections"


@pytest.fixture
async def worker(cloud_dsn: str, mosquitto: Any) -> AsyncIterator[IngestWorker]:
    settings = CloudSettings(dsn=cloud_dsn, mqtt_port=mosquitto.port, share_group="attribution")
    async with IngestWorker(settings) as running:
        yield running


async def upload_contract(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, options=UTC_OPTIONS) as conn:
        async with conn.transaction():
            await contracts.upload_contract(conn, "acme", contract_yaml())


async def rejected_count(dsn: str) -> int:
    async with await psycopg.AsyncConnection.connect(dsn, options=UTC_OPTIONS) as conn:
        value = await reports.contract_value(conn, "acme", "c-2026")
    return int(value["rejected"])


def stranger_key(acme: Gateway) -> bytes:
    return msgspec.json.encode(v.build_voucher(acme.claims(1, None), Ed25519PrivateKey.generate()))


def altered_gain(acme: Gateway) -> bytes:
    document = copy.deepcopy(v.build_voucher(acme.claims(1, None), acme.key))
    document["credentialSubject"]["delta"]["point"] = 9.0
    return msgspec.json.encode(document)


def claims_only(acme: Gateway) -> bytes:
    return b'{"credentialSubject": {"voucher_id": "gw-a1:1", "contract": "c-2026"}}'


@pytest.mark.parametrize(
    ("build", "code"),
    [(stranger_key, "key_unknown"), (altered_gain, "signature_invalid"), (claims_only, "schema_version")],
)  # fmt: skip
async def test_unverified_rejection_not_counted(
    build: Callable[[Gateway], bytes], code: str, two_tenants: tuple[Gateway, Gateway], worker: IngestWorker, probe: Probe, cloud_dsn: str
) -> None:
    acme, _ = two_tenants
    await upload_contract(cloud_dsn)
    probe.publish(acme.topic("vouchers"), build(acme))
    rows = await wait_for_rows(cloud_dsn, REJECTION_SQL, count=1)
    assert [row[:4] for row in rows] == [(code, "acme", "gw-a1:1", None)]
    assert await rejected_count(cloud_dsn) == 0


async def test_revoked_key_rejection_not_counted(two_tenants: tuple[Gateway, Gateway], worker: IngestWorker, probe: Probe, cloud_dsn: str) -> None:
    acme, _ = two_tenants
    await upload_contract(cloud_dsn)
    key_id = (await query(cloud_dsn, "SELECT id FROM gateway_keys WHERE gateway_id = 'gw-a1'"))[0][0]
    async with await psycopg.AsyncConnection.connect(cloud_dsn, options=UTC_OPTIONS) as conn:
        async with conn.transaction():
            await store.revoke_gateway_key(conn, "acme", "gw-a1", key_id, "key leaked", force=True)
    probe.publish(acme.topic("vouchers"), msgspec.json.encode(acme.next_voucher()))
    rows = await wait_for_rows(cloud_dsn, REJECTION_SQL, count=1)
    assert [row[:4] for row in rows] == [("key_revoked", "acme", "gw-a1:1", None)]
    assert await rejected_count(cloud_dsn) == 0


async def test_signed_rejections_counted(two_tenants: tuple[Gateway, Gateway], worker: IngestWorker, probe: Probe, cloud_dsn: str) -> None:
    acme, _ = two_tenants
    await upload_contract(cloud_dsn)
    probe.publish(acme.topic("vouchers"), msgspec.json.encode(acme.next_voucher()))
    await wait_for_rows(cloud_dsn, "SELECT 1 FROM vouchers", count=1)

    # Sequence 1 again with another gain, signed by the gateway's own key: a fork.
    probe.publish(acme.topic("vouchers"), msgspec.json.encode(v.build_voucher(acme.claims(1, None, point=5.0), acme.key)))
    # A correctly signed voucher from a gateway whose clock runs years ahead.
    future = v.build_voucher(acme.claims(2, v.voucher_hash(acme.issued[0]), day=dt.date(2035, 1, 1)), acme.key)
    probe.publish(acme.topic("vouchers"), msgspec.json.encode(future))

    rows = await wait_for_rows(cloud_dsn, REJECTION_SQL + " ORDER BY id", count=2)
    assert sorted(row[:4] for row in rows) == [("fork", "acme", "gw-a1:1", "c-2026"), ("future_timestamp", "acme", "gw-a1:2", "c-2026")]
    assert await rejected_count(cloud_dsn) == 2


async def test_voucher_mismatch_names_only_topic(two_tenants: tuple[Gateway, Gateway], worker: IngestWorker, probe: Probe, cloud_dsn: str) -> None:
    acme, globex = two_tenants
    probe.publish(globex.topic("vouchers"), msgspec.json.encode(acme.next_voucher()))
    ((code, tenant, voucher_id, contract, reason),) = await wait_for_rows(cloud_dsn, REJECTION_SQL, count=1)
    assert (code, tenant) == ("topic_mismatch", "globex")
    assert voucher_id is None
    assert contract is None
    assert "globex/works/gw-g1" in reason
    for foreign in ("acme", "plant1", "gw-a1"):
        assert foreign not in reason


async def test_telemetry_mismatch_names_only_topic(two_tenants: tuple[Gateway, Gateway], worker: IngestWorker, probe: Probe, cloud_dsn: str) -> None:
    acme, globex = two_tenants
    probe.publish(globex.topic("telemetry"), acme.telemetry(minute_records("m1", dt.datetime(2026, 3, 1, tzinfo=dt.UTC), 2)))
    ((code, tenant, _voucher_id, _contract, reason),) = await wait_for_rows(cloud_dsn, REJECTION_SQL, count=1)
    assert (code, tenant) == ("topic_mismatch", "globex")
    assert "another tenant, site and gateway than its topic globex/works/gw-g1" in reason
    for foreign in ("acme", "plant1", "gw-a1"):
        assert foreign not in reason
