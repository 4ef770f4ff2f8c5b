"""Gateway signatures on telemetry messages, carried in two MQTT v5 user properties.

The cloud stores the first copy of each machine-minute it receives. Without
a signature, anyone allowed to publish on a gateway's telemetry topic could
send records for a day before the gateway does, and the gateway's genuine
vouchers would then never reproduce. Each telemetry message therefore
carries an Ed25519 signature by the gateway's current key over the topic
and the SHA-256 of the payload bytes, so the payload format is unchanged.
"""

from __future__ import annotations

import hashlib

import base58
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .keys import public_key_from_multibase, public_key_multibase

__all__ = ("KEY_PROPERTY", "PROPERTY_BYTES", "SIGNATURE_PROPERTY", "TelemetrySignature", "sign_telemetry", "signature_of", "verify_telemetry")

KEY_PROPERTY = "valuegate-key"
"""User property holding the signing key's public key, multibase (the form the gateway registry stores)."""
SIGNATURE_PROPERTY = "valuegate-signature"
"""User property holding the Ed25519 signature, multibase base58btc."""
_DOMAIN = b"valuegate/telemetry-signature/v1\n"
PROPERTY_BYTES = 192
"""Upper bound of the two user properties' encoded size in a PUBLISH packet (181 bytes with the longest base58 forms)."""

TelemetrySignature = tuple[str, str]
"""A message's (public key, signature) pair, both multibase."""


def _signed_bytes(topic: str, payload: bytes) -> bytes:
    return _DOMAIN + topic.encode() + b"\n" + hashlib.sha256(payload).digest()


def sign_telemetry(private_key: Ed25519PrivateKey, topic: str, payload: bytes) -> list[tuple[str, str]]:
    """Return the user properties that sign ``payload`` on ``topic`` with ``private_key``."""
    signature = private_key.sign(_signed_bytes(topic, payload))
    return [(KEY_PROPERTY, public_key_multibase(private_key.public_key())), (SIGNATURE_PROPERTY, "z" + base58.b58encode(signature).decode("ascii"))]


def signature_of(user_properties: list[tuple[str, str]] | None) -> TelemetrySignature | None:
    """Return the key and signature named in a message's user properties, or None when either is missing or repeated."""
    values: dict[str, list[str]] = {}
    for name, value in user_properties or ():
        values.setdefault(name, []).append(value)
    keys, signatures = values.get(KEY_PROPERTY, []), values.get(SIGNATURE_PROPERTY, [])
    if len(keys) != 1 or len(signatures) != 1:
        return None
    return keys[0], signatures[0]


def verify_telemetry(public_key: str, signature: str, topic: str, payload: bytes) -> bool:
    """Return whether ``signature`` (multibase) by ``public_key`` (multibase) signs ``payload`` on ``topic``."""
    if not signature.startswith("z"):
        return False
    try:
        raw = base58.b58decode(signature[1:])
        public_key_from_multibase(public_key).verify(raw, _signed_bytes(topic, payload))
    except (ValueError, InvalidSignature):
        return False
    return True
