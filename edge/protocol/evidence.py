"""Evidence digest: an RFC 6962 Merkle tree (SHA-256) over canonical per-minute records.

Leaves hash ``0x00 || JCS(record)`` and interior nodes ``0x01 || left || right``;
a tree of n leaves splits at the largest power of two below n. These are the
Certificate Transparency rules, so an auditor can rebuild the root with any
RFC 6962 implementation from the records alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from .canonical import canonicalize

__all__ = ("leaf_hash", "merkle_root", "evidence_digest", "EMPTY_ROOT")

EMPTY_ROOT = "sha256:" + hashlib.sha256(b"").hexdigest()


def leaf_hash(record: Any) -> bytes:
    """Hash one record (a msgspec struct or plain JSON data) as an RFC 6962 leaf."""
    if isinstance(record, msgspec.Struct):
        record = msgspec.to_builtins(record)
    return hashlib.sha256(b"\x00" + canonicalize(record)).digest()


def _root(leaves: Sequence[bytes]) -> bytes:
    # Iterative form of RFC 6962 section 2.1: fold pairs level by level,
    # carrying an unpaired last node up unchanged.
    level = list(leaves)
    while len(level) > 1:
        paired = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def merkle_root(leaves: Sequence[bytes]) -> str:
    """Return ``sha256:<hex>`` of the Merkle tree over already-hashed ``leaves``."""
    if not leaves:
        return EMPTY_ROOT
    return "sha256:" + _root(leaves).hex()


def evidence_digest(records: Iterable[Any]) -> tuple[str, int]:
    """Return the Merkle root over ``records`` (in the given order) and how many there were."""
    leaves = [leaf_hash(record) for record in records]
    return merkle_root(leaves), len(leaves)
