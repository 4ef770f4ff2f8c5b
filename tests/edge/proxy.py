"""A TCP proxy for the tests that cuts an MQTT connection right after forwarding a chosen PUBLISH, or drops it.

It forwards bytes both ways and parses the client's stream into MQTT
packets. After it has forwarded the N-th PUBLISH whose topic ends with the
given suffix, it stops forwarding the broker's bytes (so the PUBACK never
reaches the client), waits a moment for the broker to deliver the message,
and closes both sides. Later connections are forwarded untouched. With
``drop=True`` it swallows that PUBLISH instead and forwards the rest, so
the broker never sees it and the client never gets its PUBACK.
"""

from __future__ import annotations

import asyncio
import contextlib


def _packet_length(buffer: bytearray) -> int | None:
    """Return the full length of the first MQTT packet in ``buffer``, or None when it is incomplete."""
    multiplier, value, index = 1, 0, 1
    while True:
        if index >= len(buffer):
            return None
        byte = buffer[index]
        value += (byte & 0x7F) * multiplier
        multiplier *= 128
        index += 1
        if not byte & 0x80:
            break
    total = index + value
    return total if len(buffer) >= total else None


class PublishCutProxy:
    def __init__(self, broker_port: int, *, cut_after_publishes: int, topic_suffix: bytes, drop: bool = False) -> None:
        self.drop = drop
        self.broker_port = broker_port
        self.cut_after = cut_after_publishes
        self.suffix = topic_suffix
        self.port = 0
        self.cuts = 0
        self.publishes = 0
        self.forwarded = 0
        """Matching PUBLISH packets written to the broker, on every connection."""
        self.sent: list[bytes] = []
        """Every PUBLISH packet written to the broker, whatever its topic, on every connection."""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        broker_reader, broker_writer = await asyncio.open_connection("127.0.0.1", self.broker_port)
        cut = asyncio.Event()
        downstream = asyncio.create_task(self._downstream(broker_reader, client_writer, cut))
        self._tasks.add(downstream)
        buffer = bytearray()
        try:
            while not cut.is_set():
                data = await client_reader.read(65536)
                if not data:
                    break
                buffer += data
                while (length := _packet_length(buffer)) is not None:
                    packet, buffer = bytes(buffer[:length]), buffer[length:]
                    if packet[0] >> 4 == 3 and self._matches(packet) and not self.cuts:
                        self.publishes += 1
                        if self.drop and self.publishes == self.cut_after:
                            self.cuts += 1  # swallowed: the broker never receives it and the client never gets a PUBACK
                            continue
                    broker_writer.write(packet)
                    if packet[0] >> 4 == 3:
                        self.sent.append(packet)
                        self.forwarded += self._matches(packet)
                    if packet[0] >> 4 == 3 and self._matches(packet) and not self.drop and self.cuts == 0:
                        if self.publishes == self.cut_after:
                            cut.set()
                            await broker_writer.drain()
                            await asyncio.sleep(0.3)
                            self.cuts += 1
                            break
                await broker_writer.drain()
        finally:
            cut.set()
            downstream.cancel()
            for writer in (client_writer, broker_writer):
                writer.close()
                with contextlib.suppress(ConnectionError, OSError):
                    await writer.wait_closed()

    def _matches(self, packet: bytes) -> bool:
        index = 1
        while packet[index] & 0x80:
            index += 1
        index += 1
        topic_length = int.from_bytes(packet[index : index + 2], "big")
        topic = packet[index + 2 : index + 2 + topic_length]
        return topic.endswith(self.suffix)

    async def _downstream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cut: asyncio.Event) -> None:
        with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
            while True:
                data = await reader.read(65536)
                if not data or cut.is_set():
                    return
                writer.write(data)
                await writer.drain()
