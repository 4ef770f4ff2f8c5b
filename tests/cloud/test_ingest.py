"""Ingest over a real Mosquitto broker into a real PostgreSQL: storage, ack, gaps, resend and every rejection reason."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from valuegate.cloud import metrics, store
from valuegate.cloud.db import UTC_OPTIONS
from valuegate.cloud.ingest import IngestWorker
from valuegate.cloud.settings import CloudSettings
from valuegate.edge.protocol import voucher as v
from valuegate.edge.protocol.keys import public_key_multibase
from valuegate.edge.protocol.telemetry_proof import sign_telemetry

from .conftest import Gateway, minute_records, register
from .mqtt_helpers import Probe

pytestmark = [pytest.mark.postgres, pytest.mark.mosquitto]


async def query(dsn: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn, options=UTC_OPTIONS) as conn:
        return await (await conn.execute(sql, params)).fetchall()


async def wait_for_rows(dsn: str, sql: str, *params: Any, count: int, timeout: float = 10.0) -> list[tuple[Any, ...]]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        rows = await query(dsn, sql, *params)
        if len(rows) >= count or asyncio.get_running_loop().time() > deadline:
            return rows
        await asyncio.sleep(0.05)


@pytest.fixture
async def worker(cloud_dsn: str, mosquitto: Any) -> AsyncIterator[IngestWorker]:
    settings = CloudSettings(dsn=cloud_dsn, mqtt_port=mosquitto.port, share_group="test", resend_interval_s=0.2)
    async with IngestWorker(settings) as running:
        yield running


def encode(document: dict[str, Any]) -> bytes:
    return msgspec.json.encode(document)


def acked(gateway: Gateway, through: int) -> Any:
    # An ack may also carry a rejection notice; the position is what these tests follow.
    return lambda topic, body: topic == gateway.topic("ack") and (body["schema"], body["stored_through"]) == ("valuegate/ack/v1", through)


async def test_chain_stored_and_acked(two_tenants: tuple[Gateway, Gateway], worker: IngestWorker, probe: Probe, cloud_dsn: str) -> None:
    acme, _ = two_tenants
    for _ in range(3):
        probe.publish(acme.topic("vouchers"), encode(acme.next_voucher()))
    await probe.wait_for(acked(acme, 3))
    rows = await query(cloud_dsn, "SELECT voucher_id, delta_point FROM vouchers ORDER BY seq")
    assert [r[0] for r in rows] == ["gw-a1:1", "gw-a1:2", "gw-a1:3"]
    assert str(rows[0][1]) == "3.5"

    # The same voucher again is a no-op that is still acknowledged.
    probe.received.clear()
    probe.publish(acme.topic("vouchers"), encode(acme.issued[1]))
    await probe.wait_for(acked(acme, 3))
    assert len(await query(cloud_dsn, "SELECT 1 FROM vouchers")) == 3
    assert await query(cloud_dsn, "SELECT code FROM rejections") == []


async def test_gap_requests_resend(two_tenants: tuple[Gateway, Gateway], worker: IngestWorker, probe: Probe, cloud_dsn: str) -> None:
    acme, _ = two_tenants
    first, second, third, fourth = (acme.next_voucher() for _ in range(4))
    probe.publish(acme.topic("vouchers"), encode(first))
    await probe.wait_for(acked(acme, 1))
    probe.publish(acme.topic("vouchers"), encode(third))
    probe.publish(acme.topic("vouchers"), encode(fourth))
    # No further voucher arrives, so the worker's housekeeping requests the resend once the gap outlasts resend_grace_s.
    _, resend = await probe.wait_for(lambda topic, body: topic == acme.topic("resend"))
    assert resend == {"schema": "valuegate/resend/v1", "from_seq": 2, "missing": "vouchers"}
    gateway = await query(cloud_dsn, "SELECT contiguous_through, highest_seq FROM gateway_chain WHERE gateway_id = 'gw-a1'")
    assert gateway == [(1, 4)]

    # The resent voucher fills the gap; its link to both neighbours is checked and the ack jumps to 4.
    probe.publish(acme.topic("vouchers"), encode(second))
    await probe.wait_for(acked(acme, 4))
    assert await query(cloud_dsn, "SELECT code FROM rejections") == []



async def test_reordered_arrival_asks_for_no_resend(two_tenants: tuple[Gateway, Gateway], cloud_dsn: str, mosquitto: Any, probe: Probe) -> None:
    """A successor stored just before its predecessor (as with two workers) is a gap that closes within resend_grace_s."""
    acme, _ = two_tenants
    settings = CloudSettings(dsn=cloud_dsn, mqtt_port=mosquitto.port, share_group="reorder", resend_interval_s=0.2, resend_grace_s=1.5,
                             reproduce_interval_s=0.2)  # fmt: skip
    first, second, third = (acme.next_voucher() for _ in range(3))
    before = metrics.RESEND_REQUESTS._value.get()
    async with IngestWorker(settings):
        probe.publish(acme.topic("vouchers"), encode(first))
        await probe.wait_for(acked(acme, 1))
        probe.received.clear()
        probe.publish(acme.topic("vouchers"), encode(third))
        await probe.wait_for(acked(acme, 1))  # stored, with the gap at 2 still open
        await asyncio.sleep(0.5)
        probe.publish(acme.topic("vouchers"), encode(second))
        await probe.wait_for(acked(acme, 3))
        await asyncio.sleep(2.0)  # past the grace: housekeeping finds the gap closed
    assert [body for topic, body in probe.received if topic == acme.topic("resend")] == []
    assert metrics.RESEND_REQUESTS._value.get() == before

async def test_late_predecessor_must_match_successor(two_tenants: tuple[Gateway, Gateway], worker: IngestWorker, probe: Probe, cloud_dsn: str) -> None:
    acme, _ = two_tenants
    first, _second, third = (acme.next_voucher() for _ in range(3))
    # A validly signed seq 2 whose content differs from the one seq 3 links to.
    other_second = v.build_voucher(acme.claims(2, v.voucher_hash(first), point=9.0), acme.key)
    probe.publish(acme.topic("vouchers"), encode(first))
    probe.publish(acme.topic("vouchers"), encode(third))
    await wait_for_rows(cloud_dsn, "SELECT 1 FROM voucher_chain", count=2)
    probe.publish(acme.topic("vouchers"), encode(other_second))
    rows = await wait_for_rows(cloud_dsn, "SELECT code, voucher_id FROM rejections", count=1)
    assert rows == [("chain_mismatch", "gw-a1:2")]
    assert [r[0] for r in await query(cloud_dsn, "SELECT seq FROM voucher_chain ORDER BY seq")] == [1, 3]


def _changed_byte(gateway: Gateway) -> bytes:
    payload = encode(gateway.next_voucher())
    return payload.replace(b'"point":3.5', b'"point":4.5', 1)


def _naive_timestamp(gateway: Gateway) -> bytes:
    claims = gateway.claims(1, None, issued_at="2026-03-02T00:05:00")
    return encode(v.build_voucher(claims, gateway.key))


def _future(gateway: Gateway) -> bytes:
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return encode(v.build_voucher(gateway.claims(1, None, issued_at=later), gateway.key))


def _unknown_key(gateway: Gateway) -> bytes:
    return encode(v.build_voucher(gateway.claims(1, None), Ed25519PrivateKey.generate()))


def _schema_version(gateway: Gateway) -> bytes:
    document = copy.deepcopy(gateway.next_voucher())
    document["credentialSubject"]["schema"] = "valuegate/voucher/v9"
    return encode(document)


def _wrong_first_prev(gateway: Gateway) -> bytes:
    return encode(v.build_voucher(gateway.claims(1, "sha256:" + "00" * 32), gateway.key))


CASES = {
    "signature_invalid": _changed_byte,
    "naive_timestamp": _naive_timestamp,
    "future_timestamp": _future,
    "key_unknown": _unknown_key,
    "schema_version": _schema_version,
    "invalid_json": lambda gateway: encode(gateway.next_voucher()).replace(b'"point":3.5', b'"point":NaN', 1),
    "non_finite": lambda gateway: encode(gateway.next_voucher()).replace(b'"point":3.5', b'"point":1e999', 1),
    "chain_mismatch": _wrong_first_prev,
}


@pytest.mark.parametrize("code", sorted(CASES))
async def test_rejected_with_reason(code: str, two_tenants: tuple[Gateway, Gateway], worker: IngestWorker, probe: Probe, cloud_dsn: str) -> None:
    acme, _ = two_tenants
    probe.publish(acme.topic("vouchers"), CASES[code](acme))
    rows = await wait_for_rows(cloud_dsn, "SELECT code, reason, kind, tenant_id FROM rejections", count=1)
    assert [(r[0], r[2], r[3]) for r in rows] == [(code, "voucher", "acme")]
    assert rows[0][1]
    assert await query(cloud_dsn, "SELECT 1 FROM vouchers") == []
    assert await query(cloud_dsn, "SELECT 1 FROM voucher_chain") == []
    assert ("voucher", code) in worker_rejections()


def worker_rejections() -> set[tuple[str, str]]:
    from valuegate.cloud import metrics

    found = set()
    for metric in metrics.REJECTIONS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.value > 0:
                found.add((sample.labels["kind"], sample.labels["code"]))
    return found


async def test_replay_on_other_tenant_rejected(two_tenants: tuple[Gateway, Gateway], worker: IngestWorker, probe: Probe, cloud_dsn: str) -> None:
    acme, globex = two_tenants
    probe.publish(globex.topic("vouchers"), encode(acme.next_voucher()))
    rows = await wait_for_rows(cloud_dsn, "SELECT code, tenant_id, voucher_id FROM rejections", count=1)
    # The voucher id names acme's gateway, so globex's row leaves it out.
    assert rows == [("topic_mismatch", "globex", None)]
    assert await query(cloud_dsn, "SELECT 1 FROM vouchers") == []


async def test_misattributed_claims_rejected(two_tenants: tuple[Gateway, Gateway], worker: IngestWorker, probe: Probe, cloud_dsn: str) -> None:
    acme, globex = two_tenants
    # Claims and topic agree on tenant globex, but gateway gw-a1 is registered under acme.
    document = v.build_voucher(acme.claims(1, None, tenant="globex", site="works"), acme.key)
    probe.publish("valuegate/v1/globex/works/gw-a1/vouchers", encode(document))
    rows = await wait_for_rows(cloud_dsn, "SELECT code FROM rejections", count=1)
    assert rows == [("gateway_unknown",)]
    assert await query(cloud_dsn, "SELECT 1 FROM vouchers") == []


async def test_revoked_key_rejected(two_tenants: tuple[Gateway, Gateway], worker: IngestWorker, probe: Probe, cloud_dsn: str) -> None:
    acme, _ = two_tenants
    key_id = (await query(cloud_dsn, "SELECT id FROM gateway_keys WHERE gateway_id = 'gw-a1'"))[0][0]
    async with await psycopg.AsyncConnection.connect(cloud_dsn) as conn:
        async with conn.transaction():
            await store.revoke_gateway_key(conn, "acme", "gw-a1", key_id, "key leaked", force=True)
    probe.publish(acme.topic("vouchers"), encode(acme.next_voucher()))
    rows = await wait_for_rows(cloud_dsn, "SELECT code FROM rejections", count=1)
    assert rows == [("key_revoked",)]
    assert await query(cloud_dsn, "SELECT 1 FROM vouchers") == []
    assert await query(cloud_dsn, "SELECT action FROM audit_log WHERE action = 'key.revoke'") == [("key.revoke",)]


async def test_key_outside_validity_rejected(two_tenants: tuple[Gateway, Gateway], worker: IngestWorker, probe: Probe, cloud_dsn: str) -> None:
    late = Gateway("acme", "plant1", "gw-a2", Ed25519PrivateKey.generate())
    await register(cloud_dsn, "acme", "plant1", "gw-a2", late.key, valid_from=dt.datetime(2026, 6, 1, tzinfo=dt.UTC))
    probe.publish(late.topic("vouchers"), encode(late.next_voucher()))
    rows = await wait_for_rows(cloud_dsn, "SELECT code FROM rejections", count=1)
    assert rows == [("key_not_valid",)]


async def test_fork_rejected(two_tenants: tuple[Gateway, Gateway], worker: IngestWorker, probe: Probe, cloud_dsn: str) -> None:
    acme, _ = two_tenants
    probe.publish(acme.topic("vouchers"), encode(acme.next_voucher()))
    await probe.wait_for(acked(acme, 1))
    fork = v.build_voucher(acme.claims(1, None, point=7.0), acme.key)
    probe.publish(acme.topic("vouchers"), encode(fork))
    rows = await wait_for_rows(cloud_dsn, "SELECT code, voucher_id FROM rejections", count=1)
    assert rows == [("fork", "gw-a1:1")]
    stored = await query(cloud_dsn, "SELECT delta_point FROM vouchers")
    assert [str(r[0]) for r in stored] == ["3.5"]


async def test_telemetry_stored_once(two_tenants: tuple[Gateway, Gateway], worker: IngestWorker, probe: Probe, cloud_dsn: str) -> None:
    acme, _ = two_tenants
    start = dt.datetime(2026, 3, 1, 0, 0, tzinfo=dt.UTC)
    records = minute_records("m1", start, 90)
    probe.publish_telemetry(acme, acme.telemetry(records[:60]))
    probe.publish_telemetry(acme, acme.telemetry(records[30:]))
    rows = await wait_for_rows(cloud_dsn, "SELECT minute, plant_date, produced FROM telemetry ORDER BY minute", count=90)
    await asyncio.sleep(0.3)
    rows = await query(cloud_dsn, "SELECT minute, plant_date, produced, reasons FROM telemetry ORDER BY minute")
    assert len(rows) == 90
    assert rows[0][0] == start
    # 00:00 UTC is 08:00 in Shanghai: the plant day is the same calendar date.
    assert str(rows[0][1]) == "2026-03-01"
    assert rows[5][3] == {"E12": 60000}


async def test_telemetry_machine_zone_sets_plant_date(
    two_tenants: tuple[Gateway, Gateway], worker: IngestWorker, probe: Probe, cloud_dsn: str
) -> None:
    acme, _ = two_tenants
    # 02:00 UTC on 1 March is 10:00 on 1 March in the site's Shanghai zone but 21:00 on 28 February in New York.
    start = dt.datetime(2026, 3, 1, 2, 0, tzinfo=dt.UTC)
    probe.publish_telemetry(acme, acme.telemetry(minute_records("m1", start, 2) + minute_records("m2", start, 2), {"m2": "America/New_York"}))
    rows = await wait_for_rows(cloud_dsn, "SELECT machine_id, plant_date FROM telemetry ORDER BY machine_id, minute", count=4)
    assert [(machine, str(day)) for machine, day in rows] == [
        ("m1", "2026-03-01"),
        ("m1", "2026-03-01"),
        ("m2", "2026-02-28"),
        ("m2", "2026-02-28"),
    ]


async def test_telemetry_unknown_zone_rejected(two_tenants: tuple[Gateway, Gateway], worker: IngestWorker, probe: Probe, cloud_dsn: str) -> None:
    acme, _ = two_tenants
    records = minute_records("m1", dt.datetime(2026, 3, 1, tzinfo=dt.UTC), 2)
    probe.publish_telemetry(acme, acme.telemetry(records, {"m1": "Mars/Olympus_Mons"}))
    rows = await wait_for_rows(cloud_dsn, "SELECT code, kind FROM rejections", count=1)
    assert rows == [("schema", "telemetry")]
    assert await query(cloud_dsn, "SELECT 1 FROM telemetry") == []


async def test_telemetry_bad_record_rejected(two_tenants: tuple[Gateway, Gateway], worker: IngestWorker, probe: Probe, cloud_dsn: str) -> None:
    acme, _ = two_tenants
    records = minute_records("m1", dt.datetime(2026, 3, 1, tzinfo=dt.UTC), 3)
    broken = msgspec.structs.replace(records[1], running_ms=61_000)
    probe.publish_telemetry(acme, acme.telemetry([records[0], broken, records[2]]))
    rows = await wait_for_rows(cloud_dsn, "SELECT code, kind FROM rejections", count=1)
    assert rows == [("invalid_record", "telemetry")]
    assert await query(cloud_dsn, "SELECT 1 FROM telemetry") == []


def _unsigned(gateway: Gateway, payload: bytes) -> list[tuple[str, str]]:
    return []


def _stranger(gateway: Gateway, payload: bytes) -> list[tuple[str, str]]:
    return sign_telemetry(Ed25519PrivateKey.generate(), gateway.topic("telemetry"), payload)


def _other_payload(gateway: Gateway, payload: bytes) -> list[tuple[str, str]]:
    return gateway.telemetry_properties(payload.replace(b'"produced":10', b'"produced":11', 1))


def _other_topic(gateway: Gateway, payload: bytes) -> list[tuple[str, str]]:
    return sign_telemetry(gateway.key, gateway.topic("vouchers"), payload)


def _two_signatures(gateway: Gateway, payload: bytes) -> list[tuple[str, str]]:
    return gateway.telemetry_properties(payload) + _stranger(gateway, payload)[1:]


@pytest.mark.parametrize(
    ("properties", "code"),
    [(_unsigned, "signature_missing"), (_stranger, "key_unknown"), (_other_payload, "signature_invalid"),
     (_other_topic, "signature_invalid"), (_two_signatures, "signature_missing")],
)  # fmt: skip
async def test_telemetry_signature_faults_rejected(
    properties: Any, code: str, two_tenants: tuple[Gateway, Gateway], worker: IngestWorker, probe: Probe, cloud_dsn: str
) -> None:
    acme, _ = two_tenants
    payload = acme.telemetry(minute_records("m1", dt.datetime(2026, 3, 1, tzinfo=dt.UTC), 3))
    probe.publish(acme.topic("telemetry"), payload, properties(acme, payload))
    rows = await wait_for_rows(cloud_dsn, "SELECT code, kind FROM rejections", count=1)
    assert rows == [(code, "telemetry")]
    assert await query(cloud_dsn, "SELECT 1 FROM telemetry") == []


async def test_telemetry_of_revoked_key_rejected(two_tenants: tuple[Gateway, Gateway], worker: IngestWorker, probe: Probe, cloud_dsn: str) -> None:
    acme, _ = two_tenants
    key_id = (await query(cloud_dsn, "SELECT id FROM gateway_keys WHERE gateway_id = 'gw-a1'"))[0][0]
    async with await psycopg.AsyncConnection.connect(cloud_dsn) as conn:
        async with conn.transaction():
            await store.revoke_gateway_key(conn, "acme", "gw-a1", key_id, "key leaked", force=True)
    probe.publish_telemetry(acme, acme.telemetry(minute_records("m1", dt.datetime(2026, 3, 1, tzinfo=dt.UTC), 3)))
    rows = await wait_for_rows(cloud_dsn, "SELECT code, kind FROM rejections", count=1)
    assert rows == [("key_revoked", "telemetry")]
    assert await query(cloud_dsn, "SELECT 1 FROM telemetry") == []


async def test_forged_telemetry_first_blocks_nothing(two_tenants: tuple[Gateway, Gateway], worker: IngestWorker, probe: Probe, cloud_dsn: str) -> None:
    """Records sent on a gateway's topic without its key, before the gateway sends its own, are rejected and the genuine ones stored."""
    acme, _ = two_tenants
    start = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    forged = acme.telemetry(minute_records("m1", start, 5, produced=999))
    probe.publish(acme.topic("telemetry"), forged, _stranger(acme, forged))
    await wait_for_rows(cloud_dsn, "SELECT code FROM rejections", count=1)
    probe.publish_telemetry(acme, acme.telemetry(minute_records("m1", start, 5)))
    rows = await wait_for_rows(cloud_dsn, "SELECT produced FROM telemetry ORDER BY minute", count=5)
    assert [produced for (produced,) in rows] == [10, 10, 10, 10, 10]


async def test_workers_share_subscription(two_tenants: tuple[Gateway, Gateway], worker: IngestWorker, probe: Probe, cloud_dsn: str, mosquitto: Any) -> None:
    acme, _ = two_tenants
    settings = CloudSettings(dsn=cloud_dsn, mqtt_port=mosquitto.port, share_group="test")
    async with IngestWorker(settings) as second:
        for _ in range(40):
            probe.publish(acme.topic("vouchers"), encode(acme.next_voucher()))
        await probe.wait_for(acked(acme, 40))
        assert worker.processed > 0
        assert second.processed > 0
        assert worker.processed + second.processed == 40
    assert len(await query(cloud_dsn, "SELECT 1 FROM voucher_chain")) == 40


async def test_key_rotation_moves_signing_by_sequence(two_tenants: tuple[Gateway, Gateway], cloud_dsn: str) -> None:
    from valuegate.edge.protocol.keyrotation import build_rotation

    from .conftest import store_direct

    acme, _ = two_tenants
    old_key, new_key = acme.key, Ed25519PrivateKey.generate()
    statement = build_rotation(old_key, new_key, tenant="acme", site="plant1", gateway="gw-a1", from_seq=3, created="2026-03-01T00:00:00Z")
    async with await psycopg.AsyncConnection.connect(cloud_dsn) as conn:
        async with conn.transaction():
            row = await store.register_rotation(conn, "acme", "gw-a1", statement)
    assert row["from_seq"] == 3
    assert row["public_key"] == public_key_multibase(new_key.public_key())

    first, second = acme.next_voucher(), acme.next_voucher()
    late_old = v.build_voucher(acme.claims(3, v.voucher_hash(second)), old_key)
    third = v.build_voucher(acme.claims(3, v.voucher_hash(second)), new_key)
    result = await store_direct(cloud_dsn, [first, second], topic_of=acme)
    assert result.stored == ["gw-a1:1", "gw-a1:2"]
    with pytest.raises(v.VoucherError) as rejected:
        await store_direct(cloud_dsn, [late_old], topic_of=acme)
    assert rejected.value.code == "key_not_valid"
    assert (await store_direct(cloud_dsn, [third], topic_of=acme)).stored == ["gw-a1:3"]

    forged = build_rotation(Ed25519PrivateKey.generate(), new_key, tenant="acme", site="plant1", gateway="gw-a1", from_seq=9, created="2026-03-02T00:00:00Z")
    async with await psycopg.AsyncConnection.connect(cloud_dsn) as conn:
        with pytest.raises(store.Invalid) as invalid:
            async with conn.transaction():
                await store.register_rotation(conn, "acme", "gw-a1", forged)
    assert invalid.value.code == "invalid_rotation"


async def test_status_rotation_registered(two_tenants: tuple[Gateway, Gateway], worker: IngestWorker, probe: Probe, cloud_dsn: str) -> None:
    from valuegate.edge.protocol.keyrotation import build_rotation

    acme, _ = two_tenants
    new_key = Ed25519PrivateKey.generate()
    statement = build_rotation(acme.key, new_key, tenant="acme", site="plant1", gateway="gw-a1", from_seq=2, created="2026-03-01T00:00:00Z")
    status = {"schema": "valuegate/status/v1", "state": "online", "instance": "i-1", "ts": "2026-03-01T00:00:00Z", "rotations": [statement]}
    probe.publish(acme.topic("status"), status)
    rows = await wait_for_rows(cloud_dsn, "SELECT from_seq FROM gateway_keys WHERE gateway_id = 'gw-a1' AND from_seq IS NOT NULL", count=1)
    assert rows == [(2,)]

    probe.publish(acme.topic("vouchers"), encode(acme.next_voucher()))
    acme.key = new_key
    probe.publish(acme.topic("vouchers"), encode(acme.next_voucher()))
    await probe.wait_for(acked(acme, 2))
    assert await query(cloud_dsn, "SELECT code FROM rejections") == []


async def test_missing_records_requested(two_tenants: tuple[Gateway, Gateway], mosquitto: Any, probe: Probe, cloud_dsn: str) -> None:
    acme, _ = two_tenants
    settings = CloudSettings(dsn=cloud_dsn, mqtt_port=mosquitto.port, share_group="records", records_wait_s=0.3, reproduce_interval_s=0.2)
    async with IngestWorker(settings):
        # The voucher commits to 1380 records that never arrive.
        probe.publish(acme.topic("vouchers"), encode(acme.next_voucher()))
        await probe.wait_for(acked(acme, 1))
        _, body = await probe.wait_for(lambda topic, body: topic == acme.topic("resend"), timeout=15)
    assert body == {"schema": "valuegate/resend/v1", "from_seq": 1, "missing": "records"}
