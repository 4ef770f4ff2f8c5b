"""Syntax of OPC UA node ids and browse-path elements in tag maps, checked without a server."""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from dataclasses import dataclass
from typing import Literal

__all__ = ("NODE_ID_FORMS", "NodeIdText", "browse_prefix_problem", "node_id_problem", "parse_node_id")

NODE_ID_FORMS = (
    "nsu=<namespace URI>;s=<name> (or ;i=<number>, ;g=<GUID>, ;b=<base64>), "
    "ns=<index>;s=<name> (same identifier kinds), or i=<number> for namespace 0"
)

_NODE = re.compile(r"^(?:nsu=(?P<uri>[^;]+);|ns=(?P<ns>\d+);)?(?P<kind>[isgb])=(?P<ident>.+)$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class NodeIdText:
    """The parts of a node id string: namespace URI or index, identifier kind and identifier."""

    uri: str | None
    """Namespace URI of an ``nsu=`` id, else None."""
    index: int | None
    """Namespace index of an ``ns=`` id (0 when neither ``nsu=`` nor ``ns=`` is given), None for an ``nsu=`` id."""
    kind: Literal["i", "s", "g", "b"]
    """Identifier kind: numeric, string, GUID or ByteString."""
    identifier: int | str | uuid.UUID | bytes


def _split(text: str) -> NodeIdText | str:
    """Return the parts of a node id, or the reason ``text`` is not one (without repeating the text)."""
    match = _NODE.match(text.strip())
    if match is None:
        return "not a node id"
    kind, ident = match["kind"], match["ident"]
    identifier: int | str | uuid.UUID | bytes
    if kind == "i":
        if not ident.isdigit() or int(ident) > 0xFFFFFFFF:
            return f"numeric identifier {ident!r} is not an integer from 0 to 4294967295"
        identifier = int(ident)
    elif kind == "g":
        try:
            identifier = uuid.UUID(ident)
        except ValueError:
            return f"GUID identifier {ident!r} is not a GUID such as 72962b91-fa75-4ae6-8d28-b404dc7daf63"
    elif kind == "b":
        try:
            identifier = base64.b64decode(ident, validate=True)
        except binascii.Error:
            return f"ByteString identifier {ident!r} is not base64"
    else:
        identifier = ident
    index: int | None = None
    if match["ns"] is not None:
        index = int(match["ns"])
    elif match["uri"] is None:
        index = 0  # i=85 without a namespace: namespace 0
    if index is not None and index > 0xFFFF:
        return f"namespace index {index} is above 65535"
    return NodeIdText(match["uri"], index, kind, identifier)  # type: ignore[arg-type]


def node_id_problem(text: str) -> str | None:
    """Return why ``text`` is not a valid node id, or None when it is one."""
    parts = _split(text)
    return parts if isinstance(parts, str) else None


def parse_node_id(text: str) -> NodeIdText:
    """Split ``nsu=URI;s=Name``, ``ns=2;i=5`` or ``i=85`` into its parts.

    Raises ValueError naming the value, what is wrong and the accepted forms.
    """
    parts = _split(text)
    if isinstance(parts, str):
        raise ValueError(f"invalid node id {text!r}: {parts}; use {NODE_ID_FORMS}")
    return parts


def browse_prefix_problem(element: str, namespaces: dict[str, str]) -> str | None:
    """Return why a browse-path element's namespace prefix cannot resolve, or None when it can.

    An element is ``prefix:BrowseName`` or a bare ``BrowseName`` (namespace 0).
    The prefix is a key of the tag map's ``namespaces`` or a namespace URI
    itself. A URI always contains a ``:`` after its scheme, so a bare word
    that is not a key (``zz``, or an index such as ``2``) never resolves.
    """
    prefix, sep, name = element.rpartition(":")
    if not sep:
        return None if element else "a browse path element is empty"
    if not name:
        return "the element has no browse name after its prefix"
    if prefix in namespaces or ":" in prefix:
        return None
    return f"prefix {prefix!r} is not a key of `namespaces` and not a namespace URI"
