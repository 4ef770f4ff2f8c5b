"""The delivery scenarios again, with the product's ingest worker and PostgreSQL in place of the stand-in."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from valuegate.services import MosquittoServer

from .helpers import GATEWAY, SITE, TENANT
from .proxy import PublishCutProxy
from .realcloud import register, rejections, stored, worker
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
    proxy = PublishCutProxy(mosquitto.port, cut_after_publishes=2, topic_suffix=b"/vouchers")
    await proxy.start()
    try:
        async for gw in started_gateway(tmp_path / "gw", proxy.port, cloud_dsn, publish={"window": 1}):
            async with worker(cloud_dsn, mosquitto.port):
                await issue(gw, 4, "2026-01-01")
                assert await gw.wait_empty(30) == 0
                assert proxy.cuts == 1
        assert [seq for seq, _ in await stored(cloud_dsn)] == [1, 2, 3, 4]
        assert await rejections(cloud_dsn) == []
    finally:
        await proxy.stop()


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
