"""Ingest broker sessions on a real Mosquitto: nothing sent while the ingest is stopped is lost, and no session lingers."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import psycopg
import pytest
import structlog

from valuegate.cloud.db import UTC_OPTIONS, open_pool
from valuegate.cloud.ingest import IngestError, IngestWorker
from valuegate.cloud.ingest_sessions import retire_sessions, worker_name
from valuegate.cloud.settings import CloudSettings
from valuegate.services import MosquittoServer

from .conftest import Gateway, minute_records
from .mqtt_helpers import Probe

pytestmark = [pytest.mark.postgres, pytest.mark.mosquitto]

START = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


async def telemetry_rows(dsn: str, gateway: str) -> int:
    async with await psycopg.AsyncConnection.connect(dsn, options=UTC_OPTIONS) as conn:
        row = await (await conn.execute("SELECT count(*) FROM telemetry WHERE gateway_id = %s", (gateway,))).fetchone()
    return int(row[0])


async def wait_rows(dsn: str, gateway: str, expected: int, timeout_s: float = 15.0) -> int:
    deadline = time.monotonic() + timeout_s
    while (rows := await telemetry_rows(dsn, gateway)) != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return rows


def publish_batches(port: int, gateway: Gateway, batches: int, *, first_batch: int = 0, per_batch: int = 6) -> None:
    """Publish ``batches`` telemetry messages of ``per_batch`` distinct minutes each, as a gateway does."""
    probe = Probe(port)
    try:
        for index in range(first_batch, first_batch + batches):
            records = minute_records("m1", START + dt.timedelta(minutes=index * per_batch), per_batch)
            probe.publish_telemetry(gateway, gateway.telemetry(records))
    finally:
        probe.close()


@pytest.mark.parametrize(("named", "expected"), [(True, 30), (False, 0)])
async def test_telemetry_sent_while_ingest_stopped(
    two_tenants: tuple[Gateway, Gateway], cloud_dsn: str, mosquitto: MosquittoServer, named: bool, expected: int
) -> None:
    """A named worker's session keeps its subscription while it is stopped; an unnamed worker's ends, and with it the queue."""
    acme, _ = two_tenants
    settings = CloudSettings(dsn=cloud_dsn, mqtt_port=mosquitto.port, share_group=f"stopped-{named}", client_id_prefix=f"stopped-{named}")
    name = worker_name(settings, 1) if named else None
    async with IngestWorker(settings, name=name) as worker:
        assert not worker.session_present
    await asyncio.to_thread(publish_batches, mosquitto.port, acme, 5)
    assert await telemetry_rows(cloud_dsn, acme.gateway) == 0
    async with IngestWorker(settings, name=name) as worker:
        assert worker.session_present is named
        assert await wait_rows(cloud_dsn, acme.gateway, expected, timeout_s=5 if expected == 0 else 15) == expected


async def test_retired_worker_session_is_drained_and_ended(two_tenants: tuple[Gateway, Gateway], cloud_dsn: str, mosquitto: MosquittoServer) -> None:
    """Two workers stop; the broker splits what follows between their sessions. One worker and the retirement store it all."""
    acme, _ = two_tenants
    settings = CloudSettings(dsn=cloud_dsn, mqtt_port=mosquitto.port, share_group="retire", client_id_prefix="retire")
    for number in (1, 2):
        async with IngestWorker(settings, name=worker_name(settings, number)):
            pass
    await asyncio.to_thread(publish_batches, mosquitto.port, acme, 10)

    pool = await open_pool(cloud_dsn, min_size=1, max_size=4, name="retire-test")
    async with pool, IngestWorker(settings, pool=pool, name=worker_name(settings, 1)):
        with structlog.testing.capture_logs() as logged:
            assert await retire_sessions(settings, pool, first=2) == 1
        assert [entry["worker"] for entry in logged if entry["event"] == "ingest_session_retired"] == ["retire-2"]
        assert await wait_rows(cloud_dsn, acme.gateway, 60) == 60
        # The session is gone: a second retirement finds nothing, and what follows goes to worker 1 alone.
        assert await retire_sessions(settings, pool, first=2) == 0
        await asyncio.to_thread(publish_batches, mosquitto.port, acme, 4, first_batch=10)
        assert await wait_rows(cloud_dsn, acme.gateway, 84) == 84


async def test_second_worker_with_same_id_refused(two_tenants: tuple[Gateway, Gateway], cloud_dsn: str, mosquitto: MosquittoServer) -> None:
    """Two workers with one client id would take the broker session from each other in turn; the second one does not start."""
    acme, _ = two_tenants
    settings = CloudSettings(dsn=cloud_dsn, mqtt_port=mosquitto.port, share_group="twins", client_id_prefix="twins")
    async with IngestWorker(settings, name=worker_name(settings, 1)) as older:
        with pytest.raises(IngestError, match=r"client id 'twins-1'.*its own client_id_prefix"):
            async with IngestWorker(settings, name=worker_name(settings, 1)):
                pass
        # Retiring the session of a running worker is rejected the same way, and the running worker keeps its messages.
        assert await retire_sessions(settings, older.pool, first=1) == 0
        await asyncio.to_thread(publish_batches, mosquitto.port, acme, 3)
        assert await wait_rows(cloud_dsn, acme.gateway, 18) == 18
        assert older.connections == 1
    # Once it stopped, the id is free again.
    async with IngestWorker(settings, name=worker_name(settings, 1)) as again:
        assert again.session_present


async def terminate_lock_holders(dsn: str) -> int:
    """End the database sessions that hold an advisory lock, as a database restart would."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        rows = await (await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted")).fetchall()
    return len(rows)


async def test_lost_lock_is_taken_again(two_tenants: tuple[Gateway, Gateway], cloud_dsn: str, mosquitto: MosquittoServer) -> None:
    settings = CloudSettings(dsn=cloud_dsn, mqtt_port=mosquitto.port, share_group="relock", client_id_prefix="relock", reproduce_interval_s=0.2)
    with structlog.testing.capture_logs() as logged:
        async with IngestWorker(settings, name=worker_name(settings, 1)):
            assert await terminate_lock_holders(cloud_dsn) == 1
            deadline = time.monotonic() + 10
            while not any(entry["event"] == "ingest_client_id_reclaimed" for entry in logged) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert [entry["worker"] for entry in logged if entry["event"] == "ingest_client_id_reclaimed"] == ["relock-1"]
            with pytest.raises(IngestError, match="client id 'relock-1'"):
                async with IngestWorker(settings, name=worker_name(settings, 1)):
                    pass


async def test_worker_stops_when_id_taken_meanwhile(two_tenants: tuple[Gateway, Gateway], cloud_dsn: str, mosquitto: MosquittoServer) -> None:
    """While the first worker's lock is gone, a second worker takes the id: the first stops instead of taking the session back."""
    acme, _ = two_tenants
    slow = CloudSettings(dsn=cloud_dsn, mqtt_port=mosquitto.port, share_group="taken", client_id_prefix="taken", reproduce_interval_s=3.0)
    with structlog.testing.capture_logs() as logged:
        async with IngestWorker(slow, name=worker_name(slow, 1)) as first:
            assert await terminate_lock_holders(cloud_dsn) == 1
            async with IngestWorker(slow, name=worker_name(slow, 1)) as second:
                deadline = time.monotonic() + 15
                while not any(entry["event"] == "mqtt_session_taken_over" for entry in logged) and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                connections = first.connections
                await asyncio.sleep(2)  # the first worker stays away
                assert first.connections == connections
                await asyncio.to_thread(publish_batches, mosquitto.port, acme, 2)
                assert await wait_rows(cloud_dsn, acme.gateway, 12) == 12
                assert second.processed == 2
    taken = [entry for entry in logged if entry["event"] == "mqtt_session_taken_over"]
    assert [entry["worker"] for entry in taken] == ["taken-1"]
    assert "another ingest worker took this client id" in taken[0]["reason"]
