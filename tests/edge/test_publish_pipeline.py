"""The publisher keeps the broker busy: reads that a slow commit does not hold up, a second window held by paho, the broker's limit kept."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import threading
from pathlib import Path

import pytest

from valuegate.edge import keys, outbox
from valuegate.edge.issuer import VoucherSigner
from valuegate.edge.spool import Spool, SpoolThread
from valuegate.services import MosquittoServer

from .helpers import issue_synthetic, load
from .test_publish import gateway, standin, wait_until

pytestmark = pytest.mark.mosquitto


def _hold_write(spool: Spool, release: threading.Event, holding: threading.Event) -> None:
    """Keep a write transaction open on the spool's write thread until ``release``, as a commit on a slow disk would."""
    with spool.transaction(sync="NORMAL"):
        spool.set_meta("held", "1")
        holding.set()
        release.wait(20)


async def test_read_goes_on_while_a_write_is_open(tmp_path: Path) -> None:
    config = load(tmp_path, 1883)
    release, holding = threading.Event(), threading.Event()
    keys.create_key(config.state_path / "keys")
    async with SpoolThread(config.state_path / "spool.db") as spool:
        signer = VoucherSigner(config.state_path / "keys", tenant="acme", site="suzhou", gateway="gw-1")
        await spool.call(lambda s: issue_synthetic(s, signer, 5))
        writer = asyncio.create_task(spool.call(_hold_write, release, holding))
        try:
            assert await asyncio.to_thread(holding.wait, 10)
            entries = await asyncio.wait_for(spool.read(outbox.pending, 1, 10), 5)
            assert [entry.seq for entry in entries] == [1, 2, 3, 4, 5]
            assert not writer.done()
            # The read connection refuses writes.
            with pytest.raises(sqlite3.OperationalError, match="readonly|read-only|query_only"):
                await spool.read(lambda reader: reader.db.execute("DELETE FROM vouchers"))
        finally:
            release.set()
            await writer
        assert len(await spool.read(outbox.pending, 1, 10)) == 5


async def test_publishing_goes_on_while_an_ack_commit_waits(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    """An outbox commit held up (a slow disk) stops neither reading ahead nor publishing; the acks are applied once it ends."""
    cloud = standin(mosquitto.port)
    release, holding = threading.Event(), threading.Event()
    try:
        async with gateway(tmp_path / "gw", mosquitto.port) as gw:
            assert await wait_until(lambda: gw.publisher.connected, 10)
            assert await wait_until(lambda: gw.publisher._current.online, 10)
            await gw.spool.call(lambda s: issue_synthetic(s, gw.signer, 300))
            writer = asyncio.create_task(gw.spool.call(_hold_write, release, holding))
            try:
                assert await asyncio.to_thread(holding.wait, 10)
                gw.publisher.notify()
                assert await wait_until(lambda: gw.publisher.sent_through() == 300, 20), gw.publisher.sent_through()
                assert cloud.wait_for(300, timeout_s=20) == 300
                assert not writer.done()
                assert gw.publisher.acked_through == 0  # the ack waits for the write thread
            finally:
                release.set()
                await writer
            assert await gw.wait_empty(15) == 0
            assert gw.publisher.acked_through == 300
        assert cloud.stored() == 300
        assert cloud.chain_problems() == []
        assert cloud.rejected == []
    finally:
        cloud.stop()


async def test_paho_holds_a_second_window(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    """While the broker sends no PUBACK, the session hands paho two windows: one on the wire, one that paho sends as slots free."""
    cloud = standin(mosquitto.port)
    try:
        async with gateway(tmp_path / "gw", mosquitto.port, publish={"window": 20, "ack_timeout_s": 30}) as gw:
            assert await wait_until(lambda: gw.publisher.connected, 10)
            assert await wait_until(lambda: gw.publisher._current.online, 10)
            os.kill(mosquitto.pid, signal.SIGSTOP)
            try:
                await gw.issue(100)
                assert await wait_until(lambda: gw.publisher.inflight() == 40, 10), gw.publisher.inflight()
                session = gw.publisher._current
                assert session.client._inflight_messages == 20  # on the wire: the broker's window, no more
            finally:
                os.kill(mosquitto.pid, signal.SIGCONT)
            assert await gw.wait_empty(20) == 0
        assert cloud.stored() == 100
        assert cloud.chain_problems() == []
    finally:
        cloud.stop()


async def test_broker_receive_maximum_below_window(tmp_path: Path) -> None:
    """A broker that allows fewer messages in flight than publish.window gets no more than it allows, and everything arrives."""
    with MosquittoServer(extra_config=["max_inflight_messages 5"]) as broker:
        cloud = standin(broker.port)
        try:
            async with gateway(tmp_path / "gw", broker.port, publish={"window": 20, "ack_timeout_s": 30}) as gw:
                assert await wait_until(lambda: gw.publisher.connected, 10)
                session = gw.publisher._current
                assert session.window == 5
                on_wire: list[int] = []
                original = session.on_puback

                def on_puback(mid: int, code: int) -> bool:
                    on_wire.append(session.client._inflight_messages)  # before paho counts this PUBACK
                    return original(mid, code)

                session.on_puback = on_puback
                await gw.issue(120)
                assert await gw.wait_empty(30) == 0
                assert gw.publisher.connections == 1
                assert len(on_wire) >= 120
                assert max(on_wire) == 5
        finally:
            cloud.stop()
        assert cloud.stored() == 120
        assert cloud.chain_problems() == []
