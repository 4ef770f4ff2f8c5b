"""OPC UA client against an asyncua server that drops the session on a live connection, or that limits nodes per call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from asyncua import ua

from valuegate.adapters.devices import OpcUaDeviceConfig, open_device
from valuegate.services import free_port

from .servers import UaServer, first, tag_map

URI = "urn:valuegate:test:line"
FORGOTTEN = ("BadSessionIdInvalid", "BadSubscriptionIdInvalid")


def config(endpoint: str) -> OpcUaDeviceConfig:
    return OpcUaDeviceConfig(id="line-1", endpoint=endpoint, tag_map="unused", publishing_interval_ms=50, sampling_ms=0,
                             timeout_ms=2000, reconnect_min_ms=50, reconnect_max_ms=200)  # fmt: skip


def node_tags(*names: str) -> list[dict]:
    return [{"name": name, "node": f"nsu={URI};s=Line/{name}"} for name in names]


async def forget_sessions(server: UaServer) -> int:
    """Close every client session on the server but keep its TCP connection; return the connections left open."""
    connections = list(server.server.bserver.clients)
    for connection in connections:
        processor = connection.processor
        session, processor.session = processor.session, None
        if session is not None:
            await session.close_session(delete_subs=True)
    return len(server.server.bserver.clients)


def details(samples: list[Any]) -> str:
    return " ".join(f"{sample.detail} {sample.value!r}" for sample in samples)


async def test_forgotten_session_read_all_rebuilds(tmp_path: Path) -> None:
    variables = {"state": ua.Variant(1, ua.VariantType.Int32), "count": ua.Variant(40, ua.VariantType.UInt32)}
    async with UaServer(free_port(), variables) as server:
        mapping = tag_map(tmp_path, "forgotten-read", "opcua", node_tags("state", "count"))
        async with open_device(config(server.endpoint), mapping) as client:
            assert [(s.tag, s.value) for s in await client.read_all()] == [("state", 1), ("count", 40)]
            assert await forget_sessions(server) == 1
            await server.write("count", 41)
            # The next read fails with BadSessionIdInvalid; the client rebuilds the session and reads again.
            samples = await client.read_all()
            assert [(s.tag, s.value, s.status) for s in samples] == [("state", 1, "good"), ("count", 41, "good")]
            assert client.stats["reconnects"] == 1
    for name in FORGOTTEN:
        assert name not in details(samples)


async def test_forgotten_session_stream_rebuilds(tmp_path: Path) -> None:
    variables = {name: ua.Variant(0, ua.VariantType.Int32) for name in ("a", "b", "c")}
    # A 1.5 s session timeout gives a 0.5 s keep-alive read, which meets the forgotten session soon.
    async with UaServer(free_port(), variables, max_session_timeout_ms=1500) as server:
        async with open_device(config(server.endpoint), tag_map(tmp_path, "forgotten-stream", "opcua", node_tags("a", "b", "c"))) as client:
            stream = client.stream()
            seen = list(await first(stream, lambda b: len(b) == 3))
            assert await forget_sessions(server) == 1
            assert server.monitored_item_count() == 0
            outage = await first(stream, lambda b: True, timeout_s=10)
            seen += outage
            assert {(s.status, s.detail) for s in outage} == {("bad", "disconnected")}
            rebuilt = await first(stream, lambda b: len(b) == 3 and all(s.status == "good" for s in b), timeout_s=15)
            seen += rebuilt
            assert server.monitored_item_count() == 3
            # One delay before the rebuild; the data of the new session restarted the backoff.
            assert [draw and draw[0] for draw in client.backoff.delays] == [0.05, None]
            await server.write("b", 5)
            (change,) = await first(stream, lambda b: True)
            seen.append(change)
            assert (change.tag, change.value) == ("b", 5)
            await stream.aclose()
    for name in FORGOTTEN:
        assert name not in details(seen)


async def test_read_limit_batches_and_names_refused(tmp_path: Path) -> None:
    """The server allows 3 nodes per Read and 3 monitored items per call; 10 tags, two of them unknown."""
    names = [f"v{i}" for i in range(8)]
    server = UaServer(free_port(), {name: ua.Variant(i, ua.VariantType.Int32) for i, name in enumerate(names)}, max_items_per_call=3)
    read_sizes: list[int] = []

    async def limit_reads(ua_server: Any) -> None:
        await ua_server.get_node(ua.NodeId(11705, 0)).write_value(ua.Variant(3, ua.VariantType.UInt32))
        service = ua_server.iserver.attribute_service
        original = service.read

        def limited(params: Any) -> Any:
            read_sizes.append(len(params.NodesToRead))
            if len(params.NodesToRead) > 3:
                raise ua.UaStatusCodeError(ua.StatusCodes.BadTooManyOperations)
            return original(params)

        service.read = limited

    server.setup = limit_reads
    tags = node_tags(*names[:4]) + [{"name": "gone", "node": f"nsu={URI};s=Line/gone"}] + node_tags(*names[4:])
    tags.append({"name": "elsewhere", "node": "nsu=urn:not:there;s=Line/v1"})
    async with server:
        async with open_device(config(server.endpoint), tag_map(tmp_path, "limits", "opcua", tags)) as client:
            assert client.limits.max_nodes_per_read == 3
            assert client.limits.max_monitored_items_per_call == 3
            assert set(client.refused) == {"gone", "elsewhere"}
            assert client.refused["gone"] == "BadNodeIdUnknown"
            assert client.monitored_items == 8
            read_sizes.clear()
            samples = {s.tag: s for s in await client.read_all()}
    # 9 resolved nodes (8 known and 'gone') in reads of 3; 'elsewhere' has no node id on this server.
    assert read_sizes == [3, 3, 3]
    assert all(size <= 3 for size in server.item_calls)
    assert {name: samples[name].value for name in names} == {name: i for i, name in enumerate(names)}
    assert (samples["gone"].status, samples["gone"].detail) == ("bad", "BadNodeIdUnknown")
    assert samples["elsewhere"].status == "bad"
    assert "urn:not:there" in samples["elsewhere"].detail
