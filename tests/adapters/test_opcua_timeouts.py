"""OPC UA timeouts, whose exceptions carry no message: the logged error names what timed out, when, and after how long."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import structlog
from asyncua import ua
from asyncua.common.callback import CallbackType

from valuegate.adapters.devices import OpcUaDeviceConfig, open_device
from valuegate.services import free_port

from .servers import UaServer, eventually, tag_map

URI = "urn:valuegate:test:line"


def config(endpoint: str) -> OpcUaDeviceConfig:
    return OpcUaDeviceConfig(id="line-1", endpoint=endpoint, tag_map="unused", timeout_ms=300, reconnect_min_ms=50,
                             reconnect_max_ms=100)  # fmt: skip


def state_tag() -> list[dict]:
    return [{"name": "state", "node": f"nsu={URI};s=Line/state"}]


async def failed_events(client: Any, count: int) -> list[dict]:
    """Run the client's stream until ``count`` connects have failed; return the warnings it logged."""

    async def read() -> None:
        async for _ in client.stream():
            pass

    with structlog.testing.capture_logs() as logged:
        reader = asyncio.create_task(read())
        try:
            await eventually(lambda: client.stats["connect_failures"] >= count, timeout_s=15)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
    return [event for event in logged if event["log_level"] == "warning"]


async def test_silent_listener_names_handshake(tmp_path: Path) -> None:
    """A listener that accepts TCP connections and never sends a byte: the Hello or OpenSecureChannel times out."""
    writers: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    listener = await asyncio.start_server(accept, "127.0.0.1", free_port())
    port = listener.sockets[0].getsockname()[1]
    try:
        async with open_device(config(f"opc.tcp://127.0.0.1:{port}/"), tag_map(tmp_path, "silent", "opcua", state_tag())) as client:
            warned = await failed_events(client, 3)
    finally:
        for writer in writers:
            writer.close()
        listener.close()
        await listener.wait_closed()

    assert [event["event"] for event in warned] == ["opcua.connect_failed", "opcua.retry_failed"]
    for event in warned:
        assert event["status"] == "TimeoutError"
        assert event["error"] == "TimeoutError: Hello or OpenSecureChannel timed out after 0.3 s (timeout_ms) while connecting"
    assert client.last_error == warned[0]["error"]


async def test_held_reads_name_the_read(tmp_path: Path) -> None:
    """The session opens, then the server delays every Read past the timeout: the error names the Read and its set-up step."""
    server = UaServer(free_port(), {"state": ua.Variant(1, ua.VariantType.Int32)})

    async def hold_reads(_event: Any, _dispatcher: Any) -> None:
        await asyncio.sleep(1.0)

    async def setup(asyncua_server: Any) -> None:
        asyncua_server.subscribe_server_callback(CallbackType.PreRead, hold_reads)

    server.setup = setup
    async with server:
        async with open_device(config(server.endpoint), tag_map(tmp_path, "held", "opcua", state_tag())) as client:
            warned = await failed_events(client, 2)

    assert [event["event"] for event in warned] == ["opcua.connect_failed"] + ["opcua.retry_failed"] * (len(warned) - 1)
    assert warned[0]["error"] == "TimeoutError: Read request timed out after 0.3 s (timeout_ms) while reading the server's operation limits"
    assert client.stats["timeouts"] >= 2


async def test_refused_connect_keeps_message(tmp_path: Path) -> None:
    """An exception that has a message keeps it: a refused TCP connect names the errno."""
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}/"
    async with open_device(config(endpoint), tag_map(tmp_path, "refused", "opcua", state_tag())) as client:
        warned = await failed_events(client, 2)

    assert warned[0]["event"] == "opcua.connect_failed"
    assert warned[0]["status"] == "ConnectionRefusedError"
    assert "Connect call failed" in warned[0]["error"]
    assert "timed out" not in warned[0]["error"]


async def test_held_keepalive_names_the_read(tmp_path: Path) -> None:
    """A session that worked stops getting Read responses: the loss names the keep-alive Read and its timeout."""
    holding = asyncio.Event()

    async def hold_reads(_event: Any, _dispatcher: Any) -> None:
        if holding.is_set():
            await asyncio.sleep(1.0)

    async def setup(asyncua_server: Any) -> None:
        asyncua_server.subscribe_server_callback(CallbackType.PreRead, hold_reads)

    # A 1.5 s session timeout gives a keep-alive Read every 0.5 s.
    server = UaServer(free_port(), {"state": ua.Variant(1, ua.VariantType.Int32)}, max_session_timeout_ms=1500)
    server.setup = setup
    async with server:
        async with open_device(config(server.endpoint), tag_map(tmp_path, "keepalive", "opcua", state_tag())) as client:
            assert client.connected
            with structlog.testing.capture_logs() as logged:
                stream = client.stream()
                holding.set()
                async with asyncio.timeout(15):
                    async for batch in stream:
                        if all(sample.detail == "disconnected" for sample in batch):
                            break
                await stream.aclose()

    (lost,) = [event for event in logged if event["event"] == "opcua.disconnected"]
    assert lost["error"] == "keep-alive read failed: Read request timed out after 0.3 s (timeout_ms) while reading the server state"
    assert client.stats["keepalive_failures"] == 1
