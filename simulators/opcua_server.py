"""OPC UA server (asyncua) with one object of variables under string node ids, and injectable faults."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import structlog
from asyncua import Server, ua
from asyncua.common.callback import CallbackType

from .errors import ListenError, bind_failure, url_host

__all__ = ("VariableSpec", "VariableServer", "utc_datetime")

log = structlog.get_logger("valuegate.simulators.opcua")

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def utc_datetime(ts_us: int) -> datetime:
    """Return the aware UTC datetime of epoch microseconds, exactly."""
    seconds, micros = divmod(ts_us, 1_000_000)
    return datetime.fromtimestamp(seconds, tz=timezone.utc).replace(microsecond=micros)


@dataclass(frozen=True, slots=True)
class VariableSpec:
    """One served variable: its name under the object, its OPC UA type and its value before any write."""

    name: str
    variant_type: ua.VariantType
    initial: Any
    initial_status: ua.StatusCodes = ua.StatusCodes.Good


class VariableServer:
    """An asyncua server exposing ``{object}/{name}`` variables in namespace ``uri``.

    It keeps the last value, status and source timestamp of every variable,
    so that a restart (``server_restart`` or ``plc_restart`` faults) serves
    the same values again on the same port. Status overrides (``bad`` and
    ``uncertain`` faults) change the status of every write to the chosen
    variables until they are cleared.
    """

    def __init__(
        self,
        uri: str,
        object_name: str,
        variables: list[VariableSpec],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        initial_source: datetime | None = None,
    ) -> None:
        self.uri = uri
        self.object_name = object_name
        self.specs = {spec.name: spec for spec in variables}
        self.host = host
        self.port = port
        self._server: Server | None = None
        self._namespace = 0
        self._node_ids: dict[str, ua.NodeId] = {}
        self._served: frozenset[ua.NodeId] = frozenset()
        self._values: dict[str, ua.DataValue] = {}
        self._overrides: dict[str, ua.StatusCode] = {}
        self._delay_s = 0.0
        self._delay_until = 0.0
        self.first_client = asyncio.Event()
        """Set when a client first reads the Value of a served variable or subscribes to one."""
        source = initial_source or datetime.now(timezone.utc)
        for spec in variables:
            self._values[spec.name] = ua.DataValue(
                ua.Variant(spec.initial, spec.variant_type), StatusCode=ua.StatusCode(spec.initial_status), SourceTimestamp=source
            )

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{url_host(self.host)}:{self.port}/valuegate/simulator"

    def node_id(self, name: str) -> str:
        """Return the node id of variable ``name`` as ``nsu=<uri>;s=<object>/<name>``."""
        return f"nsu={self.uri};s={self.object_name}/{name}"

    def value(self, name: str) -> ua.DataValue:
        return self._values[name]

    async def write(self, name: str, value: Any, source: datetime, *, status: ua.StatusCodes | None = None) -> None:
        """Write ``value`` with SourceTimestamp ``source``; an active status override replaces a Good status."""
        spec = self.specs[name]
        code = ua.StatusCode(status) if status is not None else self._overrides.get(name, ua.StatusCode(ua.StatusCodes.Good))
        data_value = ua.DataValue(
            ua.Variant(value, spec.variant_type),
            StatusCode=code,
            SourceTimestamp=source,
            ServerTimestamp=datetime.now(timezone.utc),
        )
        self._values[name] = data_value
        if self._server is not None:
            await self._server.write_attribute_value(self._node_ids[name], data_value)

    # -- faults ---------------------------------------------------------------

    async def override_status(self, names: list[str], status: ua.StatusCodes, source: datetime) -> None:
        """Serve ``names`` with ``status`` (keeping their values) until :meth:`clear_overrides`."""
        for name in names:
            self._overrides[name] = ua.StatusCode(status)
            current = self._values[name]
            await self.write(name, current.Value.Value, source)

    async def clear_overrides(self, names: list[str], source: datetime) -> None:
        for name in names:
            if self._overrides.pop(name, None) is not None:
                await self.write(name, self._values[name].Value.Value, source)

    def delay_responses(self, delay_s: float, *, duration_s: float) -> None:
        """Delay the response to every client Read and Write by ``delay_s`` for ``duration_s``."""
        self._delay_s = delay_s
        self._delay_until = time.monotonic() + duration_s

    def hold_responses(self, *, duration_s: float) -> None:
        """Hold every Read and Write response until ``duration_s`` has passed, so that clients time out."""
        self._delay_until = time.monotonic() + duration_s
        self._delay_s = -1.0

    async def _before_request(self, event: Any, dispatcher: Any) -> None:
        """Server callback before each client Read and Write: note a client's first Read and apply an active delay."""
        nodes = getattr(event.request_params, "NodesToRead", None) or []
        if any(item.AttributeId == ua.AttributeIds.Value and item.NodeId in self._served for item in nodes):
            self.first_client.set()
        remaining = self._delay_until - time.monotonic()
        if remaining <= 0 or not self._delay_s:
            return
        await asyncio.sleep(remaining if self._delay_s < 0 else self._delay_s)

    async def _on_subscribed(self, event: Any, dispatcher: Any) -> None:
        """Server callback after CreateMonitoredItems: note a client's first subscription to a served variable."""
        items = getattr(event.request_params, "ItemsToCreate", None) or []
        if any(item.ItemToMonitor.NodeId in self._served for item in items):
            self.first_client.set()

    def drop_connections(self) -> int:
        """Close every client connection; return how many were closed."""
        if self._server is None:
            return 0
        transports = list(self._server.iserver.asyncio_transports)
        for transport in transports:
            transport.close()
        log.info("opcua_connections_dropped", endpoint=self.endpoint, count=len(transports))
        return len(transports)

    async def restart(self, *, down_s: float = 1.0) -> None:
        """Stop the server, stay down ``down_s`` seconds and serve the same values again on the same port."""
        await self.stop()
        await asyncio.sleep(down_s)
        await self.start()
        log.info("opcua_server_restarted", endpoint=self.endpoint, down_s=down_s)

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Build the address space and listen; with port 0 the bound port is in :attr:`port`."""
        server = Server()
        await server.init()
        server.set_endpoint(f"opc.tcp://{url_host(self.host)}:{self.port}/valuegate/simulator")
        server.set_server_name("valuegate PLC simulator")
        # Only security policy None with anonymous access. asyncua 2.1's defaults also list signed and encrypted
        # policies and user-name and certificate log-in, and then it warns at start that the server has no
        # certificate and would take passwords in plain text. The simulator has no certificate and no users.
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        server.set_identity_tokens([ua.AnonymousIdentityToken])
        self._namespace = await server.register_namespace(self.uri)
        machine = await server.nodes.objects.add_object(
            ua.NodeId(self.object_name, self._namespace), ua.QualifiedName(self.object_name, self._namespace)
        )
        for name, spec in self.specs.items():
            node_id = ua.NodeId(f"{self.object_name}/{name}", self._namespace)
            node = await machine.add_variable(node_id, ua.QualifiedName(name, self._namespace), ua.Variant(spec.initial, spec.variant_type))
            self._node_ids[name] = node.nodeid
        for name, data_value in self._values.items():
            await server.write_attribute_value(self._node_ids[name], data_value)
        self._served = frozenset(self._node_ids.values())
        server.subscribe_server_callback(CallbackType.PreRead, self._before_request)
        server.subscribe_server_callback(CallbackType.ItemSubscriptionCreated, self._on_subscribed)
        server.subscribe_server_callback(CallbackType.PreWrite, self._before_request)
        try:
            await server.start()
        except OSError as exc:
            raise ListenError("OPC UA", self.host, self.port, bind_failure(self.host, self.port)) from exc
        self.port = server.bserver.port
        self._server = server
        log.info("opcua_server_started", endpoint=self.endpoint, namespace=self.uri)
        log.info("opcua_security_none", endpoint=self.endpoint, detail="serves security policy None with anonymous access only, for local testing")

    async def stop(self) -> None:
        """Stop serving; safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        # asyncua's stop waits for its once-a-second CurrentTime task to wake up; cancel it instead.
        time_task = server.iserver.time_task
        if time_task is not None:
            time_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await time_task
            server.iserver.time_task = None
        await server.stop()
        log.info("opcua_server_stopped", endpoint=self.endpoint)

    async def __aenter__(self) -> VariableServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
