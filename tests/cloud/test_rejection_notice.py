"""The ingest reports to a registered gateway why it rejected one of its messages, in the ack, once a minute per kind and code.

Runs the ingest worker against real Mosquitto and PostgreSQL; a plain MQTT
client publishes as the gateway and reads the acks.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from valuegate.cloud import metrics
from valuegate.cloud.ingest import IngestWorker
from valuegate.edge.protocol import voucher as v

from .conftest import Gateway, minute_records
from .mqtt_helpers import Probe
from .test_ingest import acked, encode, wait_for_rows, worker  # noqa: F401 (fixture)

pytestmark = [pytest.mark.postgres, pytest.mark.mosquitto]


def noticed(gateway: Gateway, code: str) -> Any:
    return lambda topic, body: topic == gateway.topic("ack") and body.get("rejected", {}).get("code") == code


async def test_unknown_key_reported_in_ack(two_tenants: tuple[Gateway, Gateway], worker: IngestWorker, probe: Probe, cloud_dsn: str) -> None:
    acme, globex = two_tenants
    before = metrics.REJECTION_NOTICES._value.get()
    stranger = Ed25519PrivateKey.generate()
    for seq in (1, 2):
        probe.publish(acme.topic("vouchers"), encode(v.build_voucher(acme.claims(seq, None), stranger)))
    _, body = await probe.wait_for(noticed(acme, "key_unknown"))
    assert body["schema"] == "valuegate/ack/v1"
    assert body["stored_through"] == 0
    assert body["rejected"]["kind"] == "voucher"
    assert body["rejected"]["voucher_id"] in ("gw-a1:1", "gw-a1:2")
    assert "valuegate cloud admin key-add" in body["rejected"]["reason"]
    await wait_for_rows(cloud_dsn, "SELECT code FROM rejections WHERE code = 'key_unknown'", count=2)

    # Unsigned telemetry is another kind and code, so it is reported too, with the position unchanged.
    probe.publish(acme.topic("telemetry"), acme.telemetry(minute_records("m1", dt.datetime(2026, 3, 1, tzinfo=dt.UTC), 2)))
    _, telemetry = await probe.wait_for(noticed(acme, "signature_missing"))
    assert (telemetry["rejected"]["kind"], telemetry["stored_through"], telemetry["rejected"]["voucher_id"]) == ("telemetry", 0, None)

    # The second key_unknown within the minute went to the rejection table only; a stored voucher's ack carries no notice.
    probe.publish(acme.topic("vouchers"), encode(acme.next_voucher()))
    _, plain = await probe.wait_for(acked(acme, 1))
    assert "rejected" not in plain
    notices = [body for topic, body in probe.received if topic == acme.topic("ack") and "rejected" in body]
    assert [body["rejected"]["code"] for body in notices] == ["key_unknown", "signature_missing"]
    assert metrics.REJECTION_NOTICES._value.get() - before == 2
    # The other tenant's gateway heard nothing.
    assert [topic for topic, _ in probe.received if topic == globex.topic("ack")] == []


async def test_no_notice_to_unregistered_or_foreign_topic(two_tenants: tuple[Gateway, Gateway], worker: IngestWorker, probe: Probe, cloud_dsn: str) -> None:
    acme, globex = two_tenants
    before = metrics.REJECTION_NOTICES._value.get()
    # An unregistered gateway id, and acme's gateway named under globex's tenant: rejected, but nothing goes to those topics.
    probe.publish("valuegate/v1/acme/plant1/gw-ghost/vouchers", encode(acme.next_voucher()))
    probe.publish("valuegate/v1/globex/works/gw-a1/vouchers", encode(v.build_voucher(acme.claims(1, None, tenant="globex", site="works"), acme.key)))
    rows = await wait_for_rows(cloud_dsn, "SELECT code FROM rejections ORDER BY code", count=2)
    assert rows == [("gateway_unknown",), ("topic_mismatch",)]
    # A valid voucher of globex afterwards: its ack arrives, and no notice went anywhere.
    probe.publish(globex.topic("vouchers"), encode(globex.next_voucher()))
    await probe.wait_for(acked(globex, 1))
    assert [body for _, body in probe.received if "rejected" in body] == []
    assert metrics.REJECTION_NOTICES._value.get() == before
