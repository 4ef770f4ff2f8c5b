"""A link to a real asyncua server cut and restored while the PLC's state stays the same: the cut stays offline time.

The server's state variable keeps the SourceTimestamp of its last change
across the cut, so the first notification after the reconnect reports the
machine running since before it. The PLC was not read during the cut, so
that time is offline, and the run resumes with the server's clock when
reading resumes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

from asyncua import ua

from tests.adapters.servers import UaServer, first, tag_map
from valuegate.adapters.devices import OpcUaDeviceConfig, open_device
from valuegate.edge.normalize import Normalizer
from valuegate.edge.protocol.records import STATE_CODES
from valuegate.services import free_port

URI = "urn:valuegate:test:line"
RUNNING, OFFLINE = STATE_CODES["running"], STATE_CODES["offline"]


class CuttableLink:
    """A TCP forwarder on a loopback port that can drop every connection and refuse new ones, as a pulled cable does."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target_port = target_port
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.frozen = False
        """While True, bytes are dropped in both directions and nothing is closed: a link gone silent, with no reset."""

    async def restore(self) -> None:
        self.server = await asyncio.start_server(self._connect, "127.0.0.1", self.port)

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, upstream_writer]

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    if not self.frozen:
                        sink.write(data)
                        await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(pump(reader, upstream_writer), pump(upstream_reader, writer))


async def test_cut_link_counts_offline(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    async with UaServer(free_port(), {"state": ua.Variant(1, ua.VariantType.Int32), "clock": ua.Variant(now, ua.VariantType.DateTime)}) as server:

        async def tick() -> None:
            # The PLC's clock variable, written every 200 ms with its own time as SourceTimestamp.
            while True:
                await server.write("clock", dt.datetime.now(dt.UTC))
                await asyncio.sleep(0.2)

        ticking = asyncio.create_task(tick())
        link = CuttableLink(server.port)
        await link.restore()
        tags = tag_map(tmp_path, "cut", "opcua", [{"name": "state", "node": f"nsu={URI};s=Line/state"}, {"name": "clock", "node": f"nsu={URI};s=Line/clock", "role": "clock"}],
                       time={"source": "plc", "clock": "clock"})
        normalizer = Normalizer("line-1", tags)
        events = []
        config = OpcUaDeviceConfig(id="line-1", endpoint=f"opc.tcp://127.0.0.1:{link.port}/", tag_map="unused", publishing_interval_ms=50, sampling_ms=0,
                                   timeout_ms=2000, reconnect_min_ms=50, reconnect_max_ms=200)
        async with open_device(config, tags) as client:
            stream = client.stream()
            # Reading begins: the state, and clock ticks until the state is running.
            while not any(e.code == RUNNING for e in events):
                events += normalizer.feed(await first(stream, lambda batch: True)).states

            async def feed_until(done) -> None:  # noqa: ANN001
                # As the agent does: every message goes to the normalizer as it arrives.
                async for batch in stream:
                    events.extend(normalizer.feed(batch).states)
                    if done(batch):
                        return

            # Clock ticks for 1.5 s, then the cut.
            deadline = time.monotonic() + 1.5
            await feed_until(lambda batch: time.monotonic() > deadline)
            cut_at = time.time() * 1000
            await link.cut()
            await asyncio.wait_for(feed_until(lambda batch: any(s.detail == "disconnected" for s in batch)), 10)
            await asyncio.sleep(3.0)
            await link.restore()
            restored_at = time.time() * 1000
            await asyncio.wait_for(feed_until(lambda batch: events[-1].code == RUNNING), 15)
            await stream.aclose()
        await link.cut()
        ticking.cancel()

    codes = [e.code for e in events]
    assert codes == [RUNNING, OFFLINE, RUNNING], events
    offline_from, running_again = events[1].ts_ms, events[2].ts_ms
    # Offline from the last clock tick before the cut (at most a tick and a publishing interval before it) until a tick after the link came back.
    assert cut_at - 1_000 <= offline_from <= cut_at
    assert running_again >= restored_at - 50
    assert running_again - offline_from >= 3_000


async def test_silent_link_stops_last_response(tmp_path: Path) -> None:
    """A link that drops every byte without a reset: until a keep-alive fails the client looks connected, but its last response stays put."""
    async with UaServer(free_port(), {"state": ua.Variant(1, ua.VariantType.Int32)}) as server:
        link = CuttableLink(server.port)
        await link.restore()
        tags = tag_map(tmp_path, "silent", "opcua", [{"name": "state", "node": f"nsu={URI};s=Line/state"}])
        config = OpcUaDeviceConfig(id="line-1", endpoint=f"opc.tcp://127.0.0.1:{link.port}/", tag_map="unused", publishing_interval_ms=50, sampling_ms=0,
                                   timeout_ms=1000, session_timeout_ms=3000, reconnect_min_ms=50, reconnect_max_ms=200)
        async with open_device(config, tags) as client:
            stream = client.stream()
            reader = asyncio.create_task(asyncio.wait_for(first(stream, lambda batch: any(s.detail == "disconnected" for s in batch), timeout_s=30), 30))
            await asyncio.sleep(1.5)
            # With no change to report, the server responds at least every keep-alive (a third of the 3 s session timeout).
            assert client.last_response_ms is not None
            assert client.last_response_ms >= time.time() * 1000 - 2_500
            link.frozen = True
            frozen_at = time.time() * 1000
            responses = []
            while client.connected:
                responses.append(client.last_response_ms)
                await asyncio.sleep(0.1)
            await reader
            await stream.aclose()
        await link.cut()
    assert len(responses) >= 5, "the client looked connected for a while after the link went silent"
    # Responses already on their way when the link froze may still land, within a publishing interval or so.
    assert max(responses) <= frozen_at + 200
