"""Test servers and tag-map builders for the adapter tests: pymodbus and asyncua servers on loopback ports."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from valuegate.adapters.tagmap import TagMap, load_tag_map


def write_tag_map(folder: Path, name: str, protocol: str, tags: list[dict[str, Any]], *, rules: list[dict] | None = None,
                  namespaces: dict[str, str] | None = None, time: dict[str, Any] | None = None) -> Path:
    """Write a valid tag map with the given tags; without ``rules`` the state follows the first tag (1 running, 0 planned stop).

    ``time`` replaces the map's ``time:`` section, which by default stamps samples with the gateway's clock.
    """
    first = tags[0]["name"]
    document = {
        "schema": "valuegate/tagmap/v1",
        "name": name,
        "protocol": protocol,
        "tags": tags,
        "states": {
            "model": "test",
            "rules": rules or [{"when": {first: [1]}, "category": "running"}, {"when": {first: [0]}, "category": "planned_stop"}],
            "default": "unplanned_stop",
        },
        "time": time or {"source": "gateway"},
    }
    if namespaces:
        document["namespaces"] = namespaces
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def tag_map(folder: Path, name: str, protocol: str, tags: list[dict[str, Any]], **kwargs: Any) -> TagMap:
    return load_tag_map(write_tag_map(folder, name, protocol, tags, **kwargs))


class ModbusServer:
    """A pymodbus TCP server for one unit id; ``holding`` and ``inputs`` map a start address to a block of words.

    Addresses outside the blocks return exception 02 (illegal data
    address). ``delay_s`` delays every response by that long, to provoke
    client timeouts. ``sent`` records every frame sent, as hex.
    """

    def __init__(self, port: int, *, unit_id: int = 1, holding: dict[int, list[int]] | None = None,
                 inputs: dict[int, list[int]] | None = None, coils: list[bool] | None = None,
                 discrete: list[bool] | None = None) -> None:
        self.port = port
        self.unit_id = unit_id
        self.delay_s = 0.0
        self.sent: list[str] = []
        self.requests = 0

        def blocks(table: dict[int, list[int]] | None) -> list[SimData]:
            table = table or {0: [0]}
            return [SimData(start, values=list(words), datatype=DataType.REGISTERS) for start, words in sorted(table.items())]

        def bits(values: list[bool] | None) -> list[SimData]:
            return [SimData(0, values=list(values or [False]), datatype=DataType.BITS)]

        async def action(*_args: Any) -> None:
            self.requests += 1
            if self.delay_s:
                await asyncio.sleep(self.delay_s)

        self._device = SimDevice(id=unit_id, simdata=(bits(coils), bits(discrete), blocks(holding), blocks(inputs)), action=action)
        self._server: ModbusTcpServer | None = None

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if sending:
            self.sent.append(data.hex())
        return data

    async def start(self) -> ModbusServer:
        self._server = ModbusTcpServer(self._device, address=("127.0.0.1", self.port), trace_packet=self._trace)
        await self._server.serve_forever(background=True)
        return self

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()

    async def set_holding(self, address: int, words: list[int]) -> None:
        assert self._server is not None
        await self._server.async_setValues(self.unit_id, 16, address, words)

    async def __aenter__(self) -> ModbusServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def first(stream: Any, predicate: Callable[[list], bool], *, timeout_s: float = 10.0) -> list:
    """Return the first batch of ``stream`` for which ``predicate`` holds, failing after ``timeout_s``."""

    async def scan() -> list:
        async for batch in stream:
            if predicate(batch):
                return batch
        raise AssertionError("stream ended")

    return await asyncio.wait_for(scan(), timeout_s)


async def eventually(check: Callable[[], Awaitable[bool] | bool], *, timeout_s: float = 10.0, step_s: float = 0.05) -> None:
    """Wait until ``check`` returns true, failing after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(step_s)


class UaServer:
    """An asyncua server with variables ``Line/<name>`` (string node ids) in namespace ``uri``.

    ``namespaces_before`` registers other namespaces first, so that ``uri``
    gets a different index. ``max_items_per_call`` rejects CreateMonitoredItems
    calls with more items (BadTooManyOperations) and publishes the limit in
    OperationLimits; ``item_calls`` records the size of every call.
    """

    def __init__(self, port: int, variables: dict[str, Any], *, uri: str = "urn:valuegate:test:line",
                 namespaces_before: tuple[str, ...] = (), max_session_timeout_ms: float | None = None,
                 max_subscriptions: int | None = None, max_items_per_call: int | None = None) -> None:
        self.port = port
        self.endpoint = f"opc.tcp://127.0.0.1:{port}/"
        self.variables = variables
        self.uri = uri
        self.namespaces_before = namespaces_before
        self.max_session_timeout_ms = max_session_timeout_ms
        self.max_subscriptions = max_subscriptions
        self.max_items_per_call = max_items_per_call
        self.item_calls: list[int] = []
        self.nodes: dict[str, Any] = {}
        self.server: Any = None
        self.namespace_index = 0
        self.setup: Callable[[Any], Awaitable[None]] | None = None

    async def start(self) -> UaServer:
        from asyncua import Server, ua

        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.disable_clock()  # the clock task sleeps 1 s between updates, which delays stop() by up to 1 s
        if self.setup is not None:
            await self.setup(server)
        for uri in self.namespaces_before:
            await server.register_namespace(uri)
        index = self.namespace_index = await server.register_namespace(self.uri)
        line = await server.nodes.objects.add_object(ua.NodeId("Line", index), ua.QualifiedName("Line", index))
        for name, value in self.variables.items():
            self.nodes[name] = await line.add_variable(ua.NodeId(f"Line/{name}", index), ua.QualifiedName(name, index), value)
        if self.max_session_timeout_ms is not None:
            server.iserver.min_session_timeout_ms = min(100, self.max_session_timeout_ms)
            server.iserver.max_session_timeout_ms = self.max_session_timeout_ms
        if self.max_subscriptions is not None:
            server.iserver.max_subscriptions = self.max_subscriptions
        if self.max_items_per_call is not None:
            limit = self.max_items_per_call
            await server.get_node(ua.NodeId(11714, 0)).write_value(ua.Variant(limit, ua.VariantType.UInt32))
            service = server.iserver.subscription_service
            original = service.create_monitored_items

            async def limited(params: Any) -> Any:
                self.item_calls.append(len(params.ItemsToCreate))
                if len(params.ItemsToCreate) > limit:
                    raise ua.UaStatusCodeError(ua.StatusCodes.BadTooManyOperations)
                return await original(params)

            service.create_monitored_items = limited
        await server.start()
        self.server = server
        return self

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            await server.stop()

    async def write(self, name: str, value: Any, *, status: Any = None, variant_type: Any = None) -> None:
        """Write a value (with a status code, for example Bad with the same value) as the PLC would."""
        import datetime

        from asyncua import ua

        node = self.nodes[name]
        variant = ua.Variant(value, variant_type) if variant_type is not None else ua.Variant(value, await node.read_data_type_as_variant_type())
        data_value = ua.DataValue(variant, StatusCode=status or ua.StatusCode(ua.StatusCodes.Good),
                                  SourceTimestamp=datetime.datetime.now(datetime.timezone.utc))
        await self.server.write_attribute_value(node.nodeid, data_value)

    def monitored_item_count(self) -> int:
        subscriptions = self.server.iserver.subscription_service.subscriptions.values()
        return sum(len(sub.monitored_item_srv._monitored_items) for sub in subscriptions)

    async def __aenter__(self) -> UaServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
