"""RFC 8785 (JCS) canonical JSON and the SHA-256 digests taken over it."""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785

__all__ = ("CanonicalizationError", "canonicalize", "sha256_hex", "content_digest")


class CanonicalizationError(ValueError):
    """A document contains a value that RFC 8785 cannot encode (NaN, infinity, a too-large integer)."""


def canonicalize(document: Any) -> bytes:
    """Encode ``document`` as RFC 8785 canonical JSON (UTF-8 bytes, no trailing newline)."""
    try:
        return rfc8785.dumps(document)
    except rfc8785.CanonicalizationError as exc:
        msg = f"cannot encode the document as canonical JSON: {exc}; JCS accepts only JSON types, finite numbers and integers within 2**53"
        raise CanonicalizationError(msg) from exc


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_digest(document: Any) -> str:
    """Return ``sha256:<hex>`` over the canonical form of ``document``."""
    return "sha256:" + sha256_hex(canonicalize(document))
