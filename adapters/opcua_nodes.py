"""OPC UA node resolution at connect time: namespace-URI node ids, browse paths and the server's operation limits."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from asyncua import Client, ua

from .nodeid import parse_node_id
from .tagmap import OpcUaTag

T = TypeVar("T")
R = TypeVar("R")

__all__ = ("OperationLimits", "ResolvedTag", "batches", "call_in_batches", "parse_node", "read_operation_limits", "resolve_tags")

_ID_TYPES = {
    "i": ua.NodeIdType.Numeric,
    "s": ua.NodeIdType.String,
    "g": ua.NodeIdType.Guid,
    "b": ua.NodeIdType.ByteString,
}

# Node ids of Server/ServerCapabilities/OperationLimits/* in namespace 0 (OPC 10000-5, 6.3.11).
_LIMIT_NODES = {
    "max_nodes_per_read": 11705,
    "max_nodes_per_browse": 11710,
    "max_nodes_per_translate": 11712,
    "max_monitored_items_per_call": 11714,
}


@dataclass(frozen=True, slots=True)
class OperationLimits:
    """The server's per-call limits; 0 means the server sets none."""

    max_nodes_per_read: int = 0
    max_nodes_per_browse: int = 0
    max_nodes_per_translate: int = 0
    max_monitored_items_per_call: int = 0


@dataclass(frozen=True, slots=True)
class ResolvedTag:
    """A tag with the node id it has on this server, or why it could not be resolved."""

    tag: OpcUaTag
    node_id: ua.NodeId | None
    error: str = ""


def parse_node(text: str) -> tuple[str | None, int | None, ua.NodeIdType, object]:
    """Split ``nsu=URI;s=Name`` or ``ns=2;i=5`` into (namespace URI, namespace index, identifier type, identifier).

    Raises ValueError naming the expected forms when the text is not a node id.
    """
    parts = parse_node_id(text)
    return parts.uri, parts.index, _ID_TYPES[parts.kind], parts.identifier


def batches(items: Sequence, size: int) -> list[Sequence]:
    """Cut ``items`` into slices of at most ``size`` (all in one slice when ``size`` is 0, meaning no limit)."""
    if size <= 0:
        return [items] if items else []
    return [items[start : start + size] for start in range(0, len(items), size)]


async def call_in_batches(items: Sequence[T], limit: int, call: Callable[[Sequence[T]], Awaitable[Sequence[R]]]) -> AsyncIterator[tuple[Sequence[T], Sequence[R]]]:
    """Call ``call`` on slices of ``items`` at most ``limit`` long and yield each slice with its results.

    A server that does not publish a limit may still enforce one, so a slice
    rejected with BadTooManyOperations is halved and retried.
    """
    pending = list(batches(items, limit))
    while pending:
        chunk = pending.pop(0)
        try:
            results = await call(chunk)
        except ua.UaStatusCodeError as exc:
            if exc.code == ua.StatusCodes.BadTooManyOperations and len(chunk) > 1:
                middle = len(chunk) // 2
                pending[:0] = [chunk[:middle], chunk[middle:]]
                continue
            raise
        yield chunk, results


async def read_operation_limits(client: Client) -> OperationLimits:
    """Read the OperationLimits the server publishes; a limit the server does not publish counts as none."""
    node_ids = [ua.NodeId(number, 0) for number in _LIMIT_NODES.values()]
    try:
        values = await client.uaclient.read_attributes(node_ids, ua.AttributeIds.Value)
    except ua.UaStatusCodeError:
        # A server that allows fewer nodes per Read than there are limits rejects the combined read, so read each alone.
        values = []
        for node_id in node_ids:
            try:
                values += await client.uaclient.read_attributes([node_id], ua.AttributeIds.Value)
            except ua.UaStatusCodeError:
                values.append(ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadNotReadable)))
    found: dict[str, int] = {}
    for name, value in zip(_LIMIT_NODES, values, strict=True):
        if value.StatusCode is not None and not value.StatusCode.is_good():
            continue
        number = value.Value.Value if value.Value is not None else None
        if isinstance(number, int) and number > 0:
            found[name] = number
    return OperationLimits(**found)


def _browse_element(part: str, namespaces: dict[str, str], namespace_array: list[str]) -> ua.RelativePathElement:
    prefix, sep, name = part.rpartition(":")
    index = 0
    if sep:
        uri = namespaces.get(prefix, prefix)
        if uri not in namespace_array:
            raise LookupError(f"browse path element {part!r}: namespace {uri!r} is not on the server")
        index = namespace_array.index(uri)
    element = ua.RelativePathElement()
    element.ReferenceTypeId = ua.NodeId(ua.ObjectIds.HierarchicalReferences)
    element.IsInverse = False
    element.IncludeSubtypes = True
    element.TargetName = ua.QualifiedName(name if sep else part, index)
    return element


async def resolve_tags(
    client: Client, tags: Sequence[OpcUaTag], namespaces: dict[str, str], limits: OperationLimits
) -> list[ResolvedTag]:
    """Resolve every tag to a node id on this server, looking namespace URIs up in its current namespace array.

    Browse paths start at the Objects folder; an element ``prefix:Name`` takes
    its namespace from the tag map's ``namespaces`` (or ``prefix`` is itself a
    URI), and an element without a prefix is in namespace 0. Browse paths
    are translated in calls of at most MaxNodesPerTranslateBrowsePathsToNodeIds.
    """
    namespace_array = list(await client.get_namespace_array())
    resolved: dict[int, ResolvedTag] = {}
    paths: list[tuple[int, ua.BrowsePath]] = []
    for position, tag in enumerate(tags):
        if tag.node is not None:
            try:
                uri, index, id_type, identifier = parse_node(tag.node)
            except ValueError as exc:
                # Only this tag is refused; the server and the other tags are still read.
                resolved[position] = ResolvedTag(tag, None, f"BadNodeIdInvalid: {exc}")
                continue
            if uri is not None:
                if uri not in namespace_array:
                    resolved[position] = ResolvedTag(tag, None, f"BadNamespaceUnknown: namespace {uri!r} is not on the server")
                    continue
                index = namespace_array.index(uri)
            resolved[position] = ResolvedTag(tag, ua.NodeId(identifier, index, id_type))
            continue
        try:
            elements = [_browse_element(part, namespaces, namespace_array) for part in tag.browse_path or []]
        except LookupError as exc:
            resolved[position] = ResolvedTag(tag, None, f"BadNamespaceUnknown: {exc}")
            continue
        path = ua.BrowsePath()
        path.StartingNode = ua.NodeId(ua.ObjectIds.ObjectsFolder)
        path.RelativePath = ua.RelativePath()
        path.RelativePath.Elements = elements
        paths.append((position, path))

    async def translate(chunk: Sequence[tuple[int, ua.BrowsePath]]) -> Sequence[ua.BrowsePathResult]:
        return await client.uaclient.translate_browsepaths_to_nodeids([path for _, path in chunk])

    async for chunk, results in call_in_batches(paths, limits.max_nodes_per_translate, translate):
        for (position, _), result in zip(chunk, results, strict=True):
            tag = tags[position]
            if result.StatusCode.is_good() and result.Targets:
                target = result.Targets[0].TargetId
                resolved[position] = ResolvedTag(tag, ua.NodeId(target.Identifier, target.NamespaceIndex))
            else:
                shown = "/".join(tag.browse_path or [])
                resolved[position] = ResolvedTag(tag, None, f"{result.StatusCode.name}: browse path {shown} not found")
    return [resolved[position] for position in range(len(tags))]
