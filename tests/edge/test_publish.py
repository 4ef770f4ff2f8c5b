"""Outbox delivery over a real Mosquitto broker to the test stand-in ingest: every voucher stored once, chain whole, outbox empty."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import paho.mqtt.client as mqtt
import paho.mqtt.publish as paho_publish
import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from valuegate.edge import keys, outbox, publish_control
from valuegate.edge.config import EdgeConfig
from valuegate.edge.issuer import VoucherSigner
from valuegate.edge.metrics import AgentMetrics
from valuegate.edge.protocol.keys import public_key_multibase
from valuegate.edge.publish import ACK_SCHEMA, Publisher
from valuegate.edge.retention import prune
from valuegate.edge.spool import SpoolThread
from valuegate.services import MosquittoServer

from .helpers import GATEWAY, SITE, TENANT, issue_synthetic, load
from .proxy import PublishCutProxy
from .standin import AckResponder

pytestmark = pytest.mark.mosquitto


class Gateway:
    """A spool, a signer and a running publisher: the delivery half of an agent."""

    def __init__(self, config: EdgeConfig, spool: SpoolThread, signer: VoucherSigner, publisher: Publisher) -> None:
        self.config = config
        self.spool = spool
        self.signer = signer
        self.publisher = publisher

    async def issue(self, count: int, **kwargs: object) -> None:
        await self.spool.call(lambda spool: issue_synthetic(spool, self.signer, count, **kwargs))
        self.publisher.notify()

    async def depth(self) -> int:
        stats = await self.spool.call(outbox.outbox_stats)
        return int(stats["depth"])

    async def wait_empty(self, timeout_s: float) -> int:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while await self.depth() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        return await self.depth()


@contextlib.asynccontextmanager
async def gateway(folder: Path, port: int, **sections: object) -> AsyncIterator[Gateway]:
    config = load(folder, port, **sections)
    if not (config.state_path / "keys" / "gateway.key").exists():
        keys.create_key(config.state_path / "keys")
    async with SpoolThread(config.state_path / "spool.db") as spool:
        signer = VoucherSigner(config.state_path / "keys", tenant=TENANT, site=SITE, gateway=GATEWAY)
        publisher = Publisher(config, spool, AgentMetrics(), instance=folder.name, telemetry_key=lambda: signer.key.private_key)
        task = asyncio.create_task(publisher.run())
        try:
            yield Gateway(config, spool, signer, publisher)
        finally:
            publisher.stop()
            await asyncio.wait_for(task, timeout=10)


async def wait_until(predicate, timeout_s: float) -> bool:  # noqa: ANN001
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return bool(predicate())


def standin(port: int, **kwargs: object) -> AckResponder:
    return AckResponder(port, tenant=TENANT, site=SITE, gateway=GATEWAY, **kwargs).start()


async def test_vouchers_acked_and_removed(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    cloud = standin(mosquitto.port)
    try:
        async with gateway(tmp_path / "gw", mosquitto.port) as gw:
            await gw.issue(30)
            assert await gw.wait_empty(15) == 0
            assert cloud.stored() == 30
            assert cloud.chain_problems() == []
            assert cloud.rejected == []
            assert gw.publisher.acked_through == 30
    finally:
        cloud.stop()


async def test_ack_burst_applied_in_one_commit(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    """Acks that queue up while the agent is busy are cumulative: only the highest is applied, in one spool commit."""
    async with gateway(tmp_path / "gw", mosquitto.port) as gw:
        await gw.issue(5)
        assert await wait_until(lambda: gw.publisher.sent_through() == 5, 10)
        assert await wait_until(lambda: gw.publisher.inflight() == 0, 10)
        session = gw.publisher._current
        assert session is not None
        with structlog.testing.capture_logs() as logged:
            # No await in between: the three acks are handled before the publisher's loop runs again.
            for through in (2, 5, 3):
                await session._on_message(gw.config.topic("ack"), json.dumps({"schema": ACK_SCHEMA, "stored_through": through}).encode())
            assert gw.publisher.acked_through == 0
            assert await wait_until(lambda: gw.publisher.acked_through == 5, 5)
        acknowledged = [(entry["stored_through"], entry["removed"]) for entry in logged if entry["event"] == "vouchers_acknowledged"]
        assert acknowledged == [(5, 5)]
        assert await gw.depth() == 0


async def test_acks_one_per_voucher_share_a_commit(tmp_path: Path, mosquitto: MosquittoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ack that leaves vouchers unacknowledged waits ACK_SETTLE_S for later ones; an ack covering every voucher sent applies at once."""
    monkeypatch.setattr(publish_control, "ACK_SETTLE_S", 2.0)

    async def ack(through: int) -> None:
        payload = json.dumps({"schema": ACK_SCHEMA, "stored_through": through})
        await asyncio.to_thread(paho_publish.single, topic, payload, qos=1, hostname="127.0.0.1", port=mosquitto.port, protocol=mqtt.MQTTv5)

    async with gateway(tmp_path / "gw", mosquitto.port) as gw:
        topic = gw.config.topic("ack")
        await gw.issue(10)
        assert await wait_until(lambda: gw.publisher.sent_through() == 10, 10)
        with structlog.testing.capture_logs() as logged:
            await ack(1)
            await asyncio.sleep(0.3)
            assert gw.publisher.acked_through == 0
            await ack(4)
            assert await wait_until(lambda: gw.publisher.acked_through == 4, 5)
            assert await gw.depth() == 6
            await ack(10)
            assert await wait_until(lambda: gw.publisher.acked_through == 10, 1.5)
        acknowledged = [(entry["stored_through"], entry["removed"]) for entry in logged if entry["event"] == "vouchers_acknowledged"]
        assert acknowledged == [(4, 4), (10, 6)]
        assert await gw.depth() == 0


async def test_broker_restart_loses_nothing(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    """The broker accepted 5 vouchers for an offline ingest, then restarted without persistence and lost them."""
    cloud = standin(mosquitto.port)
    cloud.stop()  # the broker keeps its session and queues for it
    async with gateway(tmp_path / "gw", mosquitto.port, publish={"ack_timeout_s": 1.0}) as gw:
        await gw.issue(5)
        assert await wait_until(lambda: gw.publisher.connected and gw.publisher.inflight() == 0 and gw.publisher.sent_through() == 5, 10)
        assert cloud.stored() == 0

        mosquitto.restart()
        cloud.start()
        assert await gw.wait_empty(20) == 0
        assert cloud.wait_for(5, timeout_s=5) == 5
        assert cloud.chain_problems() == []
        assert gw.publisher.connections >= 2
    cloud.stop()


async def test_lost_puback_duplicate_stored_once(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    """The proxy forwards the third voucher PUBLISH, drops the broker's PUBACK and cuts the connection.

    The ingest acks half a second late, so the agent republishes the third
    voucher before the ack that covers it arrives.
    """
    cloud = standin(mosquitto.port, ack_delay_s=0.5)
    proxy = PublishCutProxy(mosquitto.port, cut_after_publishes=3, topic_suffix=b"/vouchers")
    await proxy.start()
    try:
        async with gateway(tmp_path / "gw", proxy.port, publish={"window": 1}) as gw:
            await gw.issue(6)
            assert await gw.wait_empty(20) == 0
            assert proxy.cuts == 1
            assert gw.publisher.connections >= 2
        assert cloud.stored() == 6
        assert cloud.duplicates >= 1
        assert cloud.deliveries == 6 + cloud.duplicates
        assert cloud.chain_problems() == []
    finally:
        await proxy.stop()
        cloud.stop()


async def test_cloud_down_for_a_day(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    """The ingest is away while a simulated day of vouchers is issued hour by hour, then comes back."""
    cloud = standin(mosquitto.port)
    cloud.stop()
    async with gateway(tmp_path / "gw", mosquitto.port, publish={"ack_timeout_s": 0.5}) as gw:
        for hour in range(24):
            await gw.issue(2, first_date=f"2026-03-{1 + hour:02d}", anchor=f"a-{hour}")
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)  # several ack timeouts pass: the agent republishes into the broker's queue
        assert await gw.depth() == 48
        assert gw.publisher.metrics.value("valuegate_publish_retries_total") >= 1

        cloud.start()
        assert await gw.wait_empty(20) == 0
    assert cloud.stored() == 48
    assert cloud.chain_problems() == []
    assert cloud.rejected == []
    cloud.stop()


async def test_same_gateway_id_alarms_without_flapping(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    """A second agent with the gateway id of a running one finds it on the status topic, alarms and stays off."""
    async with gateway(tmp_path / "first", mosquitto.port) as first:
        assert await wait_until(lambda: first.publisher.connected and first.publisher._current.online, 10)
        async with gateway(tmp_path / "second", mosquitto.port) as second:
            assert await wait_until(lambda: second.publisher.taken_over, 10)
            await asyncio.sleep(3)  # many reconnect delays of both agents
            assert second.publisher.metrics.value("valuegate_mqtt_session_taken_over_total") == 1
            assert "instance first" in second.publisher.conflict
            assert second.publisher.connections == 1
            assert not second.publisher.connected
            assert first.publisher.connected
            assert not first.publisher.taken_over
            assert first.publisher.connections <= 2  # the second agent's CONNECT took the session over once


async def test_restart_of_same_spool_is_no_conflict(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    """A crashed run leaves its status online; the next run on the same spool must not mistake it for a second agent."""
    async with gateway(tmp_path / "gw", mosquitto.port) as gw:
        assert await wait_until(lambda: gw.publisher.connected and gw.publisher._current.online, 10)
        gw.publisher._current.client._sock.close()  # vanish without DISCONNECT; the will waits its delay
    async with gateway(tmp_path / "gw", mosquitto.port) as again:
        assert await wait_until(lambda: again.publisher.connected and again.publisher._current.online, 10)
        assert not again.publisher.taken_over


async def test_telemetry_split_to_broker_packet_limit(tmp_path: Path) -> None:
    with MosquittoServer(extra_config=["max_packet_size 6000"]) as broker:
        cloud = standin(broker.port)
        try:
            async with gateway(tmp_path / "gw", broker.port, publish={"telemetry_batch_records": 400}) as gw:
                await gw.spool.call(_store_minutes, 900)
                gw.publisher.notify()
                assert await wait_until(lambda: cloud.records() == 900, 20)
                assert cloud.rejected == []
                assert cloud.telemetry_keys == {public_key_multibase(gw.signer.key.private_key.public_key())}
                assert gw.publisher.connections == 1
                assert gw.publisher.metrics.value("valuegate_telemetry_batches_total") >= 900 * 200 // 6000  # records exceed 200 bytes
                # The ingest can hold the last batch before its PUBACK has reached the agent.
                for _ in range(100):
                    stats = await gw.spool.call(outbox.outbox_stats)
                    if stats["unpublished_records"] == 0:
                        break
                    await asyncio.sleep(0.05)
                assert stats["unpublished_records"] == 0
        finally:
            cloud.stop()


def _store_minutes(spool, count: int, first_ms: int = 1_770_000_000_000 // 60_000 * 60_000, label_from: int = 0) -> None:  # noqa: ANN001
    from valuegate.edge.spool_rows import Carry

    records = []
    for index in range(count):
        minute_ms = first_ms + index * 60_000
        record = (
            '{"changeover_ms":0,"idle_ms":0,"machine":"filler-1","minute":"M%05d","offline_ms":0,"planned_stop_ms":0,'
            '"produced":20,"reasons":{},"reject":0,"running_ms":60000,"stops":0,"uncertain_ms":0,"unplanned_stop_ms":0}' % (label_from + index)
        )
        records.append((minute_ms, record))
    spool.store_minutes("filler-1", records, done_ms=records[-1][0] + 60_000, carry=Carry(0, None, False, {}))


async def test_voucher_above_packet_limit_waits(tmp_path: Path) -> None:
    """A broker whose maximum packet size is below one voucher: nothing is sent, nothing is lost, an error is counted."""
    with MosquittoServer(extra_config=["max_packet_size 1500"]) as broker:
        async with gateway(tmp_path / "gw", broker.port) as gw:
            await gw.issue(3)
            assert await wait_until(lambda: gw.publisher.metrics.value("valuegate_publish_rejected_total") == 1, 10)
            await asyncio.sleep(1)
            assert gw.publisher.connections == 1  # held back, so the broker had no reason to disconnect
            assert gw.publisher.sent_through() == 0
            assert await gw.depth() == 3


@pytest.mark.parametrize("window", [100, 3])
async def test_gap_resend_fills_chain(tmp_path: Path, mosquitto: MosquittoServer, window: int) -> None:
    """The third voucher never reaches the broker, so the ingest finds a gap, requests a resend and gets it.

    With a window of 3, the publisher has vouchers read ahead of the window when the resend moves it back.
    """
    cloud = standin(mosquitto.port)
    proxy = PublishCutProxy(mosquitto.port, cut_after_publishes=3, topic_suffix=b"/vouchers", drop=True)
    await proxy.start()
    try:
        async with gateway(tmp_path / "gw", proxy.port, publish={"ack_timeout_s": 60, "window": window}) as gw:
            # Ten records of the third voucher's day: published once, and again with the resend.
            day_three = 1_769_904_000_000 + 2 * 86_400_000  # 2026-02-01 is 1_769_904_000_000; this is 2026-02-03T00:00:00Z
            await gw.spool.call(_store_minutes, 10, day_three)
            await gw.issue(8)
            assert await gw.wait_empty(20) == 0
            assert proxy.cuts == 1
            assert gw.publisher.metrics.value("valuegate_publish_retries_total") >= 1
            assert gw.publisher.connections == 1
            assert await wait_until(lambda: cloud.record_duplicates == 10, 10)
        assert cloud.records() == 10
        assert cloud.resends_sent[0] == 3
        assert cloud.stored() == 8
        assert cloud.chain_problems() == []
    finally:
        await proxy.stop()
        cloud.stop()


async def test_records_of_acked_voucher_sent_again(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    """An ack covers the stored voucher, not its records: a request below the ack point sends the records again.

    Once the telemetry retention has passed they are gone, and the request is answered with a warning instead.
    """
    cloud = standin(mosquitto.port)
    try:
        async with gateway(tmp_path / "gw", mosquitto.port) as gw:
            for day in range(8):  # ten records on each synthetic voucher's day, from 2026-02-01T00:00:00Z
                await gw.spool.call(_store_minutes, 10, 1_769_904_000_000 + day * 86_400_000, day * 10)
            await gw.issue(8)
            assert await gw.wait_empty(20) == 0
            assert await wait_until(lambda: cloud.records() == 80, 10)
            assert gw.publisher.acked_through == 8
            with structlog.testing.capture_logs() as logged:
                cloud.client.publish(f"{cloud.prefix}/resend", json.dumps({"schema": "valuegate/resend/v1", "from_seq": 6}), qos=1)
                assert await wait_until(lambda: cloud.record_duplicates == 30, 10)  # vouchers 6, 7 and 8
            assert [entry["resending_from"] for entry in logged if entry["event"] == "resend_requested"] == [9]
            assert not [entry for entry in logged if entry["event"] == "evidence_unavailable"]
            assert cloud.duplicates == 0  # no acknowledged voucher was published again

            # After the retention the records and the acknowledged scopes are pruned: nothing to send.
            await gw.spool.call(lambda spool: prune(spool, 10**12, now_ms=10**15, retention_ms=1))
            assert await gw.spool.call(outbox.voucher_span, 8) is None
            with structlog.testing.capture_logs() as logged:
                cloud.client.publish(f"{cloud.prefix}/resend", json.dumps({"schema": "valuegate/resend/v1", "from_seq": 8}), qos=1)
                assert await wait_until(lambda: any(entry["event"] == "evidence_unavailable" for entry in logged), 10)
            assert next(entry for entry in logged if entry["event"] == "evidence_unavailable")["seq"] == 8
            assert cloud.record_duplicates == 30
    finally:
        cloud.stop()


async def test_records_request_sends_span(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    """A records request names machines and a span, and exactly those records go out again. A malformed request is counted."""
    cloud = standin(mosquitto.port)
    try:
        async with gateway(tmp_path / "gw", mosquitto.port) as gw:
            first = 1_769_904_000_000  # 2026-02-01T00:00:00Z
            await gw.spool.call(_store_minutes, 30, first)
            assert await wait_until(lambda: cloud.records() == 30, 10)
            request = {"schema": "valuegate/records-request/v1", "machines": ["filler-1"], "start": "2026-02-01T00:10:00Z", "end": "2026-02-01T00:20:00Z"}
            cloud.client.publish(f"{cloud.prefix}/resend", json.dumps(request), qos=1)
            assert await wait_until(lambda: cloud.record_duplicates == 10, 10)
            bad = {**request, "end": "2026-06-01T00:00:00Z"}  # longer than the 62 days one request may cover
            cloud.client.publish(f"{cloud.prefix}/resend", json.dumps(bad), qos=1)
            assert await wait_until(lambda: gw.publisher.metrics.value("valuegate_bad_control_messages_total") == 1, 10)
            assert cloud.record_duplicates == 10
    finally:
        cloud.stop()


async def test_rotation_announced_in_status(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    """After a key rotation the retained status names the new key and carries the statement the old key signed."""
    from valuegate.edge.keys import rotate_key

    from .test_agent import _retained_status

    async with gateway(tmp_path / "gw", mosquitto.port) as gw:
        gw.publisher.status_extra = lambda: {"key": gw.signer.key.verification_method, "rotations": gw.signer.rotations()}
        assert await wait_until(lambda: gw.publisher.connected and gw.publisher._current.online, 10)
        first = gw.signer.key.verification_method
        statement = rotate_key(gw.config.state_path / "keys", tenant=TENANT, site=SITE, gateway=GATEWAY, from_seq=1, created="2026-03-01T00:00:00Z")
        await gw.issue(4)  # the signer loads the new key inside this transaction
        assert gw.signer.key_changes == 1
        gw.publisher.announce()
        await asyncio.sleep(0.5)
        status = await _retained_status(mosquitto.port)
    assert status["key"] == statement["credentialSubject"]["next_key"] != first
    assert status["rotations"] == [statement]


async def test_reason_0x8e_raises_conflict_alarm(tmp_path: Path) -> None:
    """Brokers that report a session takeover (MQTT 5 reason 0x8E; Mosquitto 2.0.11 only closes the socket) trigger the same alarm."""
    config = load(tmp_path, 1883)
    async with SpoolThread(config.state_path / "spool.db") as spool:
        publisher = Publisher(config, spool, AgentMetrics(), instance="x", telemetry_key=Ed25519PrivateKey.generate)
        publisher._on_disconnect(0x80)
        assert not publisher.taken_over
        publisher._on_disconnect(0x8E)
        assert publisher.taken_over
        assert "0x8E" in publisher.conflict
        assert publisher.metrics.value("valuegate_mqtt_session_taken_over_total") == 1


async def test_stop_while_broker_never_answers(tmp_path: Path) -> None:
    """A broker that accepts the TCP connection but sends no CONNACK does not hold up a stop."""
    accepted = asyncio.Event()

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        await asyncio.sleep(60)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        config = load(tmp_path / "gw", port)
        keys.create_key(config.state_path / "keys")
        async with SpoolThread(config.state_path / "spool.db") as spool:
            publisher = Publisher(config, spool, AgentMetrics(), instance="silent", telemetry_key=Ed25519PrivateKey.generate)
            task = asyncio.create_task(publisher.run())
            await asyncio.wait_for(accepted.wait(), 10)
            started = asyncio.get_running_loop().time()
            publisher.stop()
            await asyncio.wait_for(task, 5)
            assert asyncio.get_running_loop().time() - started < 2
            assert publisher.metrics.value("valuegate_mqtt_connect_failures_total") == 0
    finally:
        server.close()
