"""Telemetry signatures: the signed bytes written out by hand, checked with PyNaCl (libsodium), and their size in a PUBLISH packet."""

from __future__ import annotations

import hashlib

import base58
import nacl.exceptions
import nacl.signing
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from valuegate.edge.protocol.keys import public_key_multibase
from valuegate.edge.protocol.telemetry_proof import KEY_PROPERTY, PROPERTY_BYTES, SIGNATURE_PROPERTY, sign_telemetry, signature_of, verify_telemetry

TOPIC = "valuegate/v1/acme/plant1/gw-a1/telemetry"
PAYLOAD = b'{"schema":"valuegate/telemetry/v1","tenant":"acme","site":"plant1","gateway":"gw-a1","records":[]}'


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def test_signature_verifies_with_libsodium() -> None:
    key = Ed25519PrivateKey.generate()
    properties = dict(sign_telemetry(key, TOPIC, PAYLOAD))
    assert properties[KEY_PROPERTY] == public_key_multibase(key.public_key())
    signature = base58.b58decode(properties[SIGNATURE_PROPERTY][1:])
    signed = b"valuegate/telemetry-signature/v1\n" + TOPIC.encode() + b"\n" + hashlib.sha256(PAYLOAD).digest()
    nacl.signing.VerifyKey(_raw_public(key)).verify(signed, signature)
    with pytest.raises(nacl.exceptions.BadSignatureError):
        nacl.signing.VerifyKey(_raw_public(key)).verify(signed + b"x", signature)


def test_libsodium_signature_accepted() -> None:
    seed = bytes(range(32))
    signing = nacl.signing.SigningKey(seed)
    key = Ed25519PrivateKey.from_private_bytes(seed)
    signed = b"valuegate/telemetry-signature/v1\n" + TOPIC.encode() + b"\n" + hashlib.sha256(PAYLOAD).digest()
    signature = "z" + base58.b58encode(signing.sign(signed).signature).decode()
    assert verify_telemetry(public_key_multibase(key.public_key()), signature, TOPIC, PAYLOAD)


@pytest.mark.parametrize(
    ("topic", "payload", "signature_change"),
    [(TOPIC, PAYLOAD + b" ", None), (TOPIC.replace("gw-a1", "gw-a2"), PAYLOAD, None), (TOPIC, PAYLOAD, "drop_z"), (TOPIC, PAYLOAD, "not_base58")],
)  # fmt: skip
def test_changed_message_fails(topic: str, payload: bytes, signature_change: str | None) -> None:
    key = Ed25519PrivateKey.generate()
    public, signature = signature_of(sign_telemetry(key, TOPIC, PAYLOAD)) or ("", "")
    if signature_change == "drop_z":
        signature = signature[1:]
    elif signature_change == "not_base58":
        signature = "z0OIl" + signature[5:]
    assert not verify_telemetry(public, signature, topic, payload)


def test_bad_public_key_fails() -> None:
    _, signature = signature_of(sign_telemetry(Ed25519PrivateKey.generate(), TOPIC, PAYLOAD)) or ("", "")
    assert not verify_telemetry("z6Mkshort", signature, TOPIC, PAYLOAD)
    assert not verify_telemetry("not-multibase", signature, TOPIC, PAYLOAD)


@pytest.mark.parametrize(
    ("properties", "found"),
    [(None, False), ([], False), ([(KEY_PROPERTY, "k")], False), ([(KEY_PROPERTY, "k"), (SIGNATURE_PROPERTY, "s")], True),
     ([(KEY_PROPERTY, "k"), (SIGNATURE_PROPERTY, "s"), (SIGNATURE_PROPERTY, "t")], False), ([("other", "x"), (KEY_PROPERTY, "k"), (SIGNATURE_PROPERTY, "s")], True)],
)  # fmt: skip
def test_signature_of_properties(properties: list[tuple[str, str]] | None, found: bool) -> None:
    assert (signature_of(properties) == ("k", "s")) is found


def test_properties_fit_their_allowance() -> None:
    """The publisher reserves PROPERTY_BYTES of each telemetry packet; the encoded properties never need more."""
    sizes = set()
    for _ in range(200):
        properties = Properties(PacketTypes.PUBLISH)
        properties.UserProperty = sign_telemetry(Ed25519PrivateKey.generate(), TOPIC, PAYLOAD)
        sizes.add(len(properties.pack()))
    assert max(sizes) <= PROPERTY_BYTES
    assert max(sizes) >= PROPERTY_BYTES - 16
