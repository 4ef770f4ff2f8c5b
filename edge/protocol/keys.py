"""Ed25519 keys as Multikey values and did:key identifiers (multicodec 0xed01, base58btc)."""

from __future__ import annotations

import base58
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = (
    "KeyFormatError",
    "public_key_multibase",
    "public_key_from_multibase",
    "private_key_from_multibase",
    "private_key_multibase",
    "did_key",
    "verification_method",
    "public_key_from_verification_method",
    "raw_public_key",
)

# Multicodec varint prefixes: ed25519-pub is 0xed, ed25519-priv is 0x1300.
_ED25519_PUB_PREFIX = b"\xed\x01"
_ED25519_PRIV_PREFIX = b"\x80\x26"


class KeyFormatError(ValueError):
    """A multibase key or did:key value is malformed."""


def _decode_multibase(value: str, prefix: bytes, what: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("z"):
        msg = f"{what} {value!r} is not base58btc multibase; it must start with 'z'"
        raise KeyFormatError(msg)
    try:
        raw = base58.b58decode(value[1:])
    except ValueError as exc:
        msg = f"{what} {value!r} is not valid base58btc: {exc}"
        raise KeyFormatError(msg) from exc
    if not raw.startswith(prefix) or len(raw) != len(prefix) + 32:
        msg = f"{what} {value!r} does not hold a 32-byte Ed25519 key with multicodec prefix {prefix.hex()}"
        raise KeyFormatError(msg)
    return raw[len(prefix) :]


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_multibase(key: Ed25519PublicKey) -> str:
    return "z" + base58.b58encode(_ED25519_PUB_PREFIX + raw_public_key(key)).decode("ascii")


def public_key_from_multibase(value: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(_decode_multibase(value, _ED25519_PUB_PREFIX, "public key"))


def private_key_multibase(key: Ed25519PrivateKey) -> str:
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return "z" + base58.b58encode(_ED25519_PRIV_PREFIX + seed).decode("ascii")


def private_key_from_multibase(value: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(_decode_multibase(value, _ED25519_PRIV_PREFIX, "private key"))


def did_key(key: Ed25519PublicKey) -> str:
    return "did:key:" + public_key_multibase(key)


def verification_method(key: Ed25519PublicKey) -> str:
    """Return the did:key verification method URL (``did:key:z6Mk...#z6Mk...``) for ``key``."""
    multibase = public_key_multibase(key)
    return f"did:key:{multibase}#{multibase}"


def public_key_from_verification_method(url: str) -> Ed25519PublicKey:
    """Resolve a did:key verification method URL to its public key, offline."""
    if not isinstance(url, str) or not url.startswith("did:key:"):
        msg = f"verification method {url!r} is not a did:key URL; only did:key is supported"
        raise KeyFormatError(msg)
    did, _, fragment = url.partition("#")
    multibase = did.removeprefix("did:key:")
    if fragment and fragment != multibase:
        msg = f"verification method {url!r} has fragment {fragment!r} that differs from its key {multibase!r}"
        raise KeyFormatError(msg)
    return public_key_from_multibase(multibase)
