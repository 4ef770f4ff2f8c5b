"""OPC UA client against asyncua servers: subscriptions, status codes, restarts, refused tags, namespaces and limits."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from asyncua import ua

from valuegate.adapters.devices import OpcUaDeviceConfig, open_device
from valuegate.adapters.rules import StateEvaluator
from valuegate.services import free_port

from .servers import UaServer, first, tag_map

URI = "urn:valuegate:test:line"


def config(endpoint: str, **overrides) -> OpcUaDeviceConfig:
    settings = {"id": "line-1", "endpoint": endpoint, "tag_map": "unused", "publishing_interval_ms": 50, "sampling_ms": 0,
                "timeout_ms": 2000, "reconnect_min_ms": 50, "reconnect_max_ms": 200}
    settings.update(overrides)
    return OpcUaDeviceConfig(**settings)


def node_tags(*names: str) -> list[dict]:
    return [{"name": name, "node": f"nsu={URI};s=Line/{name}"} for name in names]


async def collect(stream, seconds: float) -> list:
    """Every sample the stream yields within ``seconds``."""
    samples: list = []

    async def gather() -> None:
        async for batch in stream:
            samples.extend(batch)

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(gather(), seconds)
    return samples


async def test_subscription_changes_carry_source_timestamp(tmp_path: Path):
    async with UaServer(free_port(), {"state": ua.Variant(1, ua.VariantType.Int32), "count": ua.Variant(0, ua.VariantType.UInt32)}) as server:
        async with open_device(config(server.endpoint), tag_map(tmp_path, "sub", "opcua", node_tags("state", "count"))) as client:
            assert client.mode_in_use == "subscribe"
            assert client.monitored_items == 2
            stream = client.stream()
            initial = await first(stream, lambda b: len(b) == 2)
            assert {(s.tag, s.value, s.status, s.time_source) for s in initial} == {("state", 1, "good", "plc"), ("count", 0, "good", "plc")}
            await server.write("count", 5)
            source = (await server.nodes["count"].read_data_value()).SourceTimestamp
            (change,) = await first(stream, lambda b: True)
            assert (change.tag, change.value) == ("count", 5)
            assert change.ts_ms == int(source.timestamp() * 1000)
            await stream.aclose()


async def test_good_to_bad_same_value_is_offline(tmp_path: Path):
    async with UaServer(free_port(), {"state": ua.Variant(1, ua.VariantType.Int32)}) as server:
        tags = tag_map(tmp_path, "bad", "opcua", node_tags("state"))
        evaluator = StateEvaluator(tags)
        async with open_device(config(server.endpoint), tags) as client:
            stream = client.stream()
            for sample in await first(stream, lambda b: True):
                evaluator.update(sample)
            assert evaluator.evaluate().category == "running"
            await server.write("state", 1, status=ua.StatusCode(ua.StatusCodes.BadCommunicationError))
            (bad,) = await first(stream, lambda b: True)
            assert (bad.status, bad.detail, bad.value) == ("bad", "BadCommunicationError", None)
            evaluator.update(bad)
            assert evaluator.evaluate().category == "offline"
            await server.write("state", 1, status=ua.StatusCode(ua.StatusCodes.UncertainLastUsableValue))
            (uncertain,) = await first(stream, lambda b: True)
            assert (uncertain.status, uncertain.value, uncertain.detail) == ("uncertain", 1, "UncertainLastUsableValue")
            evaluator.update(uncertain)
            result = evaluator.evaluate()
            assert (result.category, result.uncertain) == ("running", True)
            await stream.aclose()


async def test_restart_rebuilds_without_duplicates(tmp_path: Path):
    port = free_port()
    variables = {name: ua.Variant(0, ua.VariantType.Int32) for name in ("a", "b", "c")}
    server = await UaServer(port, dict(variables)).start()
    tags = tag_map(tmp_path, "restart", "opcua", node_tags("a", "b", "c"))
    async with open_device(config(server.endpoint), tags) as client:
        stream = client.stream()
        await first(stream, lambda b: len(b) == 3)
        assert server.monitored_item_count() == 3
        await server.stop()
        outage = await first(stream, lambda b: True)
        assert [(s.tag, s.detail) for s in outage] == [("a", "disconnected"), ("b", "disconnected"), ("c", "disconnected")]
        server = await UaServer(port, dict(variables)).start()
        await first(stream, lambda b: len(b) == 3 and all(s.status == "good" for s in b), timeout_s=15)
        assert server.monitored_item_count() == 3
        assert client.stats["reconnects"] == 1
        assert client.monitored_items == 3
        for name, value in (("a", 11), ("b", 7), ("c", 13)):
            await server.write(name, value)
        await asyncio.sleep(0.3)
        await server.write("b", 8)
        later = await collect(stream, 1.0)
        # One notification per change of each node: a duplicate monitored item would repeat one.
        assert sorted((s.tag, s.value) for s in later) == [("a", 11), ("b", 7), ("b", 8), ("c", 13)]
        assert server.monitored_item_count() == 3
        await stream.aclose()
    await server.stop()


async def test_refused_tags_are_named(tmp_path: Path):
    tags = node_tags("state") + [
        {"name": "missing_node", "node": f"nsu={URI};s=Line/nothing"},
        {"name": "missing_namespace", "node": "nsu=urn:not:there;s=Line/state"},
        {"name": "missing_path", "browse_path": ["t:Line", "t:nothing"]},
        {"name": "by_path", "browse_path": ["t:Line", "t:state"]},
    ]
    async with UaServer(free_port(), {"state": ua.Variant(1, ua.VariantType.Int32)}) as server:
        mapping = tag_map(tmp_path, "refused", "opcua", tags, namespaces={"t": URI})
        async with open_device(config(server.endpoint), mapping) as client:
            assert set(client.refused) == {"missing_node", "missing_namespace", "missing_path"}
            assert client.refused["missing_node"] == "BadNodeIdUnknown"
            assert client.refused["missing_namespace"].startswith("BadNamespaceUnknown")
            assert "urn:not:there" in client.refused["missing_namespace"]
            assert client.refused["missing_path"].startswith("BadNoMatch")
            assert client.monitored_items == 2
            stream = client.stream()
            refused = await first(stream, lambda b: b[0].status == "bad")
            assert {s.tag for s in refused} == {"missing_node", "missing_namespace", "missing_path"}
            read = {s.tag: s for s in await client.read_all()}
            await stream.aclose()
    assert [s for s in read] == ["state", "missing_node", "missing_namespace", "missing_path", "by_path"]
    assert read["by_path"].value == 1
    assert read["missing_node"].detail == "BadNodeIdUnknown"


async def test_namespace_renumbering_survives(tmp_path: Path):
    port = free_port()
    variables = {"count": ua.Variant(3, ua.VariantType.Int32)}
    server = await UaServer(port, dict(variables)).start()
    first_index = server.namespace_index
    tags = node_tags("count") + [{"name": "count_by_path", "browse_path": ["t:Line", "t:count"]}]
    async with open_device(config(server.endpoint), tag_map(tmp_path, "renumber", "opcua", tags, namespaces={"t": URI})) as client:
        stream = client.stream()
        assert {s.value for s in await first(stream, lambda b: len(b) == 2)} == {3}
        await server.stop()
        await first(stream, lambda b: b[0].detail == "disconnected")
        server = await UaServer(port, {"count": ua.Variant(4, ua.VariantType.Int32)}, namespaces_before=("urn:other:a", "urn:other:b")).start()
        assert server.namespace_index == first_index + 2
        batch = await first(stream, lambda b: b[0].status == "good", timeout_s=15)
        assert {(s.tag, s.value) for s in batch} == {("count", 4), ("count_by_path", 4)}
        assert client.refused == {}
        await stream.aclose()
    await server.stop()


async def test_monitored_items_follow_operation_limits(tmp_path: Path):
    names = [f"v{i}" for i in range(5)]
    mapping = tag_map(tmp_path, "limits", "opcua", node_tags(*names))
    async with UaServer(free_port(), {n: ua.Variant(i, ua.VariantType.Int32) for i, n in enumerate(names)}, max_items_per_call=2) as server:
        async with open_device(config(server.endpoint), mapping) as client:
            assert client.limits.max_monitored_items_per_call == 2
            assert server.item_calls == [2, 2, 1]
            assert client.monitored_items == 5
            assert client.refused == {}
        # The server now enforces the limit but publishes none: the client halves each rejected call.
        await server.server.get_node(ua.NodeId(11714, 0)).write_value(ua.Variant(0, ua.VariantType.UInt32))
        server.item_calls.clear()
        async with open_device(config(server.endpoint), mapping) as client:
            assert client.limits.max_monitored_items_per_call == 0
            assert client.monitored_items == 5
            # 5 rejected, halved to 2 (accepted) and 3 (rejected), then 1 and 2.
            assert server.item_calls == [5, 2, 3, 1, 2]


async def test_keepalive_follows_revised_session_timeout(tmp_path: Path):
    async with UaServer(free_port(), {"state": ua.Variant(1, ua.VariantType.Int32)}, max_session_timeout_ms=600) as server:
        async with open_device(config(server.endpoint, session_timeout_ms=60000), tag_map(tmp_path, "ka", "opcua", node_tags("state"))) as client:
            assert client.session_timeout_ms == 600
            assert client.keepalive_s == pytest.approx(0.2)
            stream = client.stream()
            await first(stream, lambda b: True)
            await asyncio.sleep(1.5)  # several keep-alive periods: the session must outlive its 0.6 s timeout
            await server.write("state", 0)
            (change,) = await first(stream, lambda b: True)
            assert change.value == 0
            assert client.stats["reconnects"] == 0
            assert client.stats["keepalive_failures"] == 0
            await stream.aclose()


async def test_polls_when_server_cannot_subscribe(tmp_path: Path):
    async with UaServer(free_port(), {"state": ua.Variant(1, ua.VariantType.Int32)}, max_subscriptions=0) as server:
        async with open_device(config(server.endpoint, poll_ms=50), tag_map(tmp_path, "poll", "opcua", node_tags("state"))) as client:
            assert client.mode_in_use == "poll"
            stream = client.stream()
            assert (await first(stream, lambda b: True))[0].value == 1
            await server.write("state", 0)
            assert (await first(stream, lambda b: b[0].value == 0))[0].time_source == "plc"
            await stream.aclose()


async def test_unreachable_server_read_all(tmp_path: Path):
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}/"
    async with open_device(config(endpoint), tag_map(tmp_path, "down", "opcua", node_tags("state"))) as client:
        (sample,) = await client.read_all()
        assert client.connected is False
        assert "ConnectionRefusedError" in client.last_error or "Errno 111" in client.last_error
    assert (sample.status, sample.detail) == ("bad", "disconnected")


async def test_subscription_deleted_by_server_is_rebuilt(tmp_path: Path):
    async with UaServer(free_port(), {"state": ua.Variant(1, ua.VariantType.Int32)}, max_session_timeout_ms=1500) as server:
        async with open_device(config(server.endpoint), tag_map(tmp_path, "lost-sub", "opcua", node_tags("state"))) as client:
            stream = client.stream()
            await first(stream, lambda b: True)
            service = server.server.iserver.subscription_service
            await service.delete_subscriptions(list(service.subscriptions))
            assert server.monitored_item_count() == 0
            # Reads on the session still succeed, but no publish response comes, so the client must notice and rebuild.
            outage = await first(stream, lambda b: True, timeout_s=10)
            assert (outage[0].status, outage[0].detail) == ("bad", "disconnected")
            assert "no publish response" in client.last_error
            batch = await first(stream, lambda b: b[0].status == "good", timeout_s=10)
            assert batch[0].value == 1
            assert server.monitored_item_count() == 1
            await stream.aclose()
