"""The delivery scenarios again, with the product's ingest worker and PostgreSQL in place of the stand-in."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest
from prometheus_client import REGISTRY

from valuegate.services import MosquittoServer

from .helpers import GATEWAY, SITE, TENANT
from .proxy import PublishCutProxy
from .realcloud import contiguous_through, register, rejections, stored, worker
from .test_publish import gateway, wait_until

pytestmark = [pytest.mark.mosquitto, pytest.mark.postgres]


async def issue(gw, count: int, first_date: str) -> None:  # noqa: ANN001
    from .helpers import issue_synthetic

    now_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    await gw.spool.call(lambda spool: issue_synthetic(spool, gw.signer, count, first_date=first_date, now_ms=now_ms))
    gw.publisher.notify()


async def started_gateway(folder: Path, port: int, dsn: str, **sections: object) -> AsyncIterator:  # noqa: ANN201
    async with gateway(folder, port, **sections) as gw:
        await register(dsn, gw.signer.key.verification_method)
        yield gw


async def test_ingest_broker_restart(tmp_path: Path, mosquitto: MosquittoServer, cloud_dsn: str) -> None:
    async for gw in started_gateway(tmp_path / "gw", mosquitto.port, cloud_dsn):
        async with worker(cloud_dsn, mosquitto.port):
            await issue(gw, 5, "2026-01-01")
            assert await gw.wait_empty(20) == 0
        # The ingest is down; five vouchers reach the broker and die with its restart.
        await issue(gw, 5, "2026-01-06")
        assert await wait_until(lambda: gw.publisher.sent_through() == 10 and gw.publisher.inflight() == 0, 10)
        mosquitto.restart()
        async with worker(cloud_dsn, mosquitto.port):
            assert await gw.wait_empty(30) == 0
        assert [seq for seq, _ in await stored(cloud_dsn)] == list(range(1, 11))
        assert await rejections(cloud_dsn) == []


async def test_ingest_lost_puback(tmp_path: Path, mosquitto: MosquittoServer, cloud_dsn: str) -> None:
    """The broker gets the second voucher but its PUBACK is lost; the copy the agent sends again reaches the ingest and is stored once.

    A lock on the vouchers table holds the ingest until the agent has
    published the second voucher again, so the ack cannot overtake the copy.
    """
    proxy = PublishCutProxy(mosquitto.port, cut_after_publishes=2, topic_suffix=b"/vouchers")
    await proxy.start()
    duplicates_before = REGISTRY.get_sample_value("valuegate_vouchers_duplicate_total") or 0.0
    try:
        async for gw in started_gateway(tmp_path / "gw", proxy.port, cloud_dsn, publish={"window": 1}):
            async with worker(cloud_dsn, mosquitto.port), await psycopg.AsyncConnection.connect(cloud_dsn) as blocker:
                await blocker.execute("LOCK TABLE vouchers IN EXCLUSIVE MODE")
                await issue(gw, 4, "2026-01-01")
                assert await wait_until(lambda: proxy.cuts == 1 and proxy.forwarded >= 4, 20)
                await blocker.rollback()
                assert await gw.wait_empty(30) == 0
        assert [seq for seq, _ in await stored(cloud_dsn)] == [1, 2, 3, 4]
        assert await rejections(cloud_dsn) == []
        duplicates = (REGISTRY.get_sample_value("valuegate_vouchers_duplicate_total") or 0.0) - duplicates_before
        assert duplicates >= 2  # at least the first two vouchers arrived twice
        assert duplicates == proxy.forwarded - 4
    finally:
        await proxy.stop()


async def test_same_gateway_id_stored_once(tmp_path: Path, mosquitto: MosquittoServer, cloud_dsn: str) -> None:
    """A second agent with a running agent's gateway id alarms and stays off the broker; the first one's vouchers are all stored once."""
    async for first in started_gateway(tmp_path / "first", mosquitto.port, cloud_dsn):
        async with worker(cloud_dsn, mosquitto.port):
            assert await wait_until(lambda: first.publisher.connected and first.publisher._current.online, 10)
            async with gateway(tmp_path / "second", mosquitto.port) as second:
                assert await wait_until(lambda: second.publisher.taken_over, 10)
                await issue(first, 12, "2026-01-01")
                # The second agent's key is not registered, so any voucher of it that got out would be rejected.
                await issue(second, 3, "2026-01-01")
                assert await first.wait_empty(20) == 0
                await asyncio.sleep(2)  # several reconnect delays of both agents

                assert second.publisher.metrics.value("valuegate_mqtt_session_taken_over_total") == 1
                assert second.publisher.connections == 1
                assert not second.publisher.connected
                assert await second.depth() == 3
                assert first.publisher.connected
                assert not first.publisher.taken_over
                assert first.publisher.connections <= 2  # the second agent's CONNECT took the session over once
    assert [seq for seq, _ in await stored(cloud_dsn)] == list(range(1, 13))
    assert await contiguous_through(cloud_dsn) == 12
    assert await rejections(cloud_dsn) == []


async def test_ingest_down_then_back(tmp_path: Path, mosquitto: MosquittoServer, cloud_dsn: str) -> None:
    async for gw in started_gateway(tmp_path / "gw", mosquitto.port, cloud_dsn, publish={"ack_timeout_s": 0.5}):
        await issue(gw, 24, "2026-01-01")
        await asyncio.sleep(1.5)
        assert await gw.depth() == 24
        async with worker(cloud_dsn, mosquitto.port):
            assert await gw.wait_empty(30) == 0
        assert [seq for seq, _ in await stored(cloud_dsn)] == list(range(1, 25))


async def test_ingest_accepts_rotated_key(tmp_path: Path, mosquitto: MosquittoServer, cloud_dsn: str) -> None:
    """The ingest learns the next key from the rotation statement in the retained status and takes the chain on."""
    from valuegate.edge.keys import rotate_key

    async for gw in started_gateway(tmp_path / "gw", mosquitto.port, cloud_dsn):
        gw.publisher.status_extra = lambda: {"key": gw.signer.key.verification_method, "rotations": gw.signer.rotations()}
        async with worker(cloud_dsn, mosquitto.port):
            await issue(gw, 3, "2026-01-01")
            assert await gw.wait_empty(20) == 0
            now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            rotate_key(gw.config.state_path / "keys", tenant=TENANT, site=SITE, gateway=GATEWAY, from_seq=4, created=now)
            await issue(gw, 3, "2026-01-04")  # signed with the next key from seq 4 on
            assert gw.signer.key_changes == 1
            gw.publisher.announce()
            assert await gw.wait_empty(30) == 0
        assert [seq for seq, _ in await stored(cloud_dsn)] == [1, 2, 3, 4, 5, 6]
        assert await rejections(cloud_dsn) == []


async def test_records_lost_after_ack_are_sent_again(tmp_path: Path, mosquitto: MosquittoServer, cloud_dsn: str) -> None:
    """The cloud stored a voucher but not its records, which a broker dropped. On request the agent sends them although the voucher is acked."""
    async for gw in started_gateway(tmp_path / "gw", mosquitto.port, cloud_dsn):
        await gw.spool.call(_store_records, dt.datetime(2026, 1, 1, tzinfo=dt.UTC), 10)
        async with worker(cloud_dsn, mosquitto.port, records_wait_s=0.5, reproduce_interval_s=0.2):
            await issue(gw, 1, "2026-01-01")
            assert await gw.wait_empty(20) == 0
            assert await wait_until_rows(cloud_dsn, 10)
            # As if the broker had lost the telemetry message: the rows go, and the voucher has waited long enough.
            await fetch_commit(cloud_dsn, "DELETE FROM telemetry")
            await fetch_commit(cloud_dsn, "UPDATE voucher_chain SET reproduced_at = NULL, stored_at = now() - interval '1 hour'")
            assert await wait_until_rows(cloud_dsn, 10)
        assert gw.publisher.acked_through == 1
        assert [seq for seq, _ in await stored(cloud_dsn)] == [1]


async def fetch_commit(dsn: str, statement: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        await conn.execute(statement)


async def wait_until_rows(dsn: str, expected: int, timeout_s: float = 15.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            row = await (await conn.execute("SELECT count(*) FROM telemetry")).fetchone()
        if row[0] == expected:
            return True
        await asyncio.sleep(0.1)
    return False


def _store_records(spool, first: dt.datetime, count: int) -> None:  # noqa: ANN001
    """Store ``count`` running minutes of filler-1 from ``first``, as the pipeline does."""
    from valuegate.edge.spool_rows import Carry

    records = []
    for index in range(count):
        minute = first + dt.timedelta(minutes=index)
        record = (
            '{"changeover_ms":0,"idle_ms":0,"machine":"filler-1","minute":"%s","offline_ms":0,"planned_stop_ms":0,'
            '"produced":20,"reasons":{},"reject":0,"running_ms":60000,"stops":0,"uncertain_ms":0,"unplanned_stop_ms":0}' % minute.strftime("%Y-%m-%dT%H:%M:00Z")
        )
        records.append((int(minute.timestamp() * 1000), record))
    spool.store_minutes("filler-1", records, done_ms=records[-1][0] + 60_000, carry=Carry(0, None, False, {}))


async def test_unregistered_key_reported_to_agent(tmp_path: Path, mosquitto: MosquittoServer, cloud_dsn: str) -> None:
    """The cloud has registered the gateway but not the key the agent signs with: the agent logs why, counts it and keeps it for /healthz."""
    from structlog.testing import capture_logs

    from valuegate.edge.keys import create_key

    other = create_key(tmp_path / "other-keys")
    async with gateway(tmp_path / "gw", mosquitto.port, publish={"ack_timeout_s": 0.5}) as gw:
        await register(cloud_dsn, other.verification_method)
        with capture_logs() as events:
            async with worker(cloud_dsn, mosquitto.port):
                await issue(gw, 3, "2026-01-01")
                assert await wait_until(lambda: gw.publisher.cloud_rejection.current() is not None, 20)
                await asyncio.sleep(1.0)  # more rejections of the same code arrive, and stay out of the acks
        assert await gw.depth() == 3
        notice = gw.publisher.cloud_rejection.current()
        assert (notice["kind"], notice["code"], notice["voucher_id"]) == ("voucher", "key_unknown", f"{GATEWAY}:1")
        assert "valuegate cloud admin key-add" in notice["reason"]
        counted = gw.publisher.metrics.value("valuegate_cloud_rejections_total", kind="voucher", code="key_unknown")
        warned = [event for event in events if event["event"] == "cloud_rejected"]
        assert (counted, len(warned)) == (1, 1)
        assert warned[0]["code"] == "key_unknown"
    stored_codes = {code for code, _ in await rejections(cloud_dsn)}
    assert "key_unknown" in stored_codes
    assert await stored(cloud_dsn) == []


async def test_restored_cloud_gets_acknowledged_vouchers_again(tmp_path: Path, mosquitto: MosquittoServer, cloud_dsn: str) -> None:
    """The cloud's database goes back to a backup taken after voucher 2: the next vouchers show the gap, and the agent sends 3-5 again."""
    from structlog.testing import capture_logs

    async for gw in started_gateway(tmp_path / "gw", mosquitto.port, cloud_dsn):
        async with worker(cloud_dsn, mosquitto.port):
            await issue(gw, 5, "2026-01-01")
            assert await gw.wait_empty(20) == 0
        assert gw.publisher.acked_through == 5
        async with await psycopg.AsyncConnection.connect(cloud_dsn) as conn:
            await conn.execute("DELETE FROM vouchers WHERE seq > 2")
            await conn.execute("DELETE FROM voucher_chain WHERE seq > 2")
            await conn.execute("UPDATE gateway_chain SET contiguous_through = 2, highest_seq = 2")
        with capture_logs() as events:
            async with worker(cloud_dsn, mosquitto.port):
                await issue(gw, 2, "2026-01-06")
                assert await wait_until(lambda: gw.publisher.acked_through == 7, 20)
                assert await wait_until(lambda: gw.publisher.metrics.value("valuegate_acked_vouchers_resent_total") == 3, 5)
        assert [seq for seq, _ in await stored(cloud_dsn)] == list(range(1, 8))
        assert await contiguous_through(cloud_dsn) == 7
        warned = [event for event in events if event["event"] == "resend_below_ack"]
        assert warned and (warned[0]["from_seq"], warned[0]["acked_through"], warned[0]["republished"], warned[0]["no_longer_kept"]) == (3, 5, 3, 0)
        assert not [event for event in events if event["event"] == "resend_repeated"]
    assert await rejections(cloud_dsn) == []
