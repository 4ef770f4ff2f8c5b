"""Browse-path tags against an asyncua server that limits the paths per TranslateBrowsePathsToNodeIds call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import yaml
from asyncua import ua

from valuegate.adapters.devices import OpcUaDeviceConfig, open_device
from valuegate.adapters.tagmap import TagMap
from valuegate.services import free_port

from .servers import UaServer, tag_map, write_tag_map

URI = "urn:valuegate:test:line"
NAMES = [f"v{i}" for i in range(5)]
TRANSLATE_LIMIT_NODE = ua.NodeId(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerTranslateBrowsePathsToNodeIds, 0)


def config(endpoint: str) -> OpcUaDeviceConfig:
    return OpcUaDeviceConfig(id="line-1", endpoint=endpoint, tag_map="unused", publishing_interval_ms=50, sampling_ms=0,
                             timeout_ms=2000, reconnect_min_ms=50, reconnect_max_ms=200)  # fmt: skip


def path_tags(*names: str) -> list[dict]:
    return [{"name": f"{name}_by_path", "browse_path": ["t:Line", f"t:{name}"]} for name in names]


def limited_server(limit: int, *, published: bool) -> tuple[UaServer, list[int]]:
    """Return a server that rejects translate calls of more than ``limit`` paths, and the list of every call's size.

    ``published`` writes the limit to OperationLimits/MaxNodesPerTranslateBrowsePathsToNodeIds; otherwise that
    node contains 0, meaning no limit, in place of the 10000 asyncua publishes by default.
    """
    server = UaServer(free_port(), {name: ua.Variant(10 + i, ua.VariantType.Int32) for i, name in enumerate(NAMES)})
    calls: list[int] = []

    async def limit_translate(ua_server: Any) -> None:
        published_limit = limit if published else 0
        await ua_server.get_node(TRANSLATE_LIMIT_NODE).write_value(ua.Variant(published_limit, ua.VariantType.UInt32))
        service = ua_server.iserver.view_service
        original = service.translate_browsepaths_to_nodeids

        def limited(paths: list[ua.BrowsePath]) -> list[ua.BrowsePathResult]:
            calls.append(len(paths))
            if len(paths) > limit:
                raise ua.UaStatusCodeError(ua.StatusCodes.BadTooManyOperations)
            return original(paths)

        service.translate_browsepaths_to_nodeids = limited

    server.setup = limit_translate
    return server, calls


async def test_translate_follows_published_limit(tmp_path: Path) -> None:
    """Five browse paths with a published and enforced limit of 2 take ceil(5 / 2) = 3 calls, and all resolve."""
    server, calls = limited_server(2, published=True)
    mapping = tag_map(tmp_path, "paths", "opcua", path_tags(*NAMES), namespaces={"t": URI})
    async with server:
        async with open_device(config(server.endpoint), mapping) as client:
            assert client.limits.max_nodes_per_translate == 2
            assert calls == [2, 2, 1]
            assert client.refused == {}
            samples = await client.read_all()
    assert [(s.tag, s.status, s.value) for s in samples] == [(f"{name}_by_path", "good", 10 + i) for i, name in enumerate(NAMES)]


async def test_missing_browse_path_named(tmp_path: Path) -> None:
    """A path that does not exist is rejected under its tag name, and the paths sent with it in the same call still resolve."""
    server, calls = limited_server(2, published=True)
    tags = path_tags("v0", "v1") + [{"name": "nowhere", "browse_path": ["t:Line", "t:nothing"]}] + path_tags("v2", "v3")
    async with server:
        async with open_device(config(server.endpoint), tag_map(tmp_path, "missing", "opcua", tags, namespaces={"t": URI})) as client:
            assert calls == [2, 2, 1]
            assert set(client.refused) == {"nowhere"}
            assert client.refused["nowhere"] == "BadNoMatch: browse path t:Line/t:nothing not found"
            assert client.monitored_items == 4
            samples = {s.tag: s for s in await client.read_all()}
    assert {tag: (s.status, s.value) for tag, s in samples.items() if tag != "nowhere"} == {
        "v0_by_path": ("good", 10), "v1_by_path": ("good", 11), "v2_by_path": ("good", 12), "v3_by_path": ("good", 13),
    }
    assert samples["nowhere"].status == "bad"
    assert "t:Line/t:nothing" in samples["nowhere"].detail


async def test_translate_halves_unpublished_limit(tmp_path: Path) -> None:
    """A server that enforces 2 paths per call without publishing it: each rejected call is split in half and retried."""
    server, calls = limited_server(2, published=False)
    mapping = tag_map(tmp_path, "halving", "opcua", path_tags(*NAMES), namespaces={"t": URI})
    async with server:
        async with open_device(config(server.endpoint), mapping) as client:
            assert client.limits.max_nodes_per_translate == 0
            # 5 rejected, halved to 2 (accepted) and 3 (rejected), then 1 and 2.
            assert calls == [5, 2, 3, 1, 2]
            assert client.refused == {}
            samples = await client.read_all()
    assert [s.value for s in samples] == [10 + i for i in range(len(NAMES))]


async def test_single_path_rejection_fails_connect(tmp_path: Path) -> None:
    """A server that rejects even one path per call cannot be satisfied by splitting: the connect fails with its status."""
    server, calls = limited_server(0, published=False)
    mapping = tag_map(tmp_path, "none", "opcua", path_tags("v0", "v1"), namespaces={"t": URI})
    async with server:
        async with open_device(config(server.endpoint), mapping) as client:
            assert calls == [2, 1]
            assert client.connected is False
            assert client.stats["connect_failures"] == 1
            assert client.last_error.startswith("BadTooManyOperations")


async def test_malformed_node_id_refuses_only_its_tag(tmp_path: Path) -> None:
    """A node id that does not parse fails only its own tag, by name; the other tags of the device are still read."""
    server = UaServer(free_port(), {"v0": ua.Variant(10, ua.VariantType.Int32)})
    tags = [{"name": "v0", "node": f"nsu={URI};s=Line/v0"}, {"name": "broken", "node": "nsu=urn:x;q=Machine"}, *path_tags("v0")]
    path = write_tag_map(tmp_path, "mixed", "opcua", tags, namespaces={"t": URI})
    # Converted without load_tag_map's checks, which reject the node id: the map of a gateway that skipped check-config.
    mapping = msgspec.convert(yaml.safe_load(path.read_text(encoding="utf-8")), TagMap)
    async with server:
        async with open_device(config(server.endpoint), mapping) as client:
            assert list(client.refused) == ["broken"]
            assert client.refused["broken"].startswith("BadNodeIdInvalid: invalid node id 'nsu=urn:x;q=Machine': not a node id; use nsu=")
            samples = {s.tag: s for s in await client.read_all()}
    assert (samples["v0"].status, samples["v0"].value) == ("good", 10)
    assert (samples["v0_by_path"].status, samples["v0_by_path"].value) == ("good", 10)
    assert samples["broken"].status == "bad"
    assert samples["broken"].detail.startswith("BadNodeIdInvalid")
