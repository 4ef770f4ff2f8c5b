"""The OPC UA server certificate check: a different pinned certificate, and an expired one, are rejected with the reason."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from asyncua import ua
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from valuegate.adapters.devices import OpcUaDeviceConfig, OpcUaSecurity, open_device
from valuegate.adapters.opcua_security import thumbprint
from valuegate.services import free_port

from .servers import UaServer, tag_map

URI = "urn:valuegate:test:line"
TAGS = [{"name": "state", "node": f"nsu={URI};s=Line/state"}]


def write_certificate(folder: Path, name: str, *, valid_from_days: int, valid_to_days: int) -> tuple[Path, Path, x509.Certificate]:
    """Write a self-signed server certificate (DER) and key (PEM) valid from and to the given days relative to today."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    names = [x509.UniformResourceIdentifier("urn:test:plc"), x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=valid_from_days))
        .not_valid_after(now + datetime.timedelta(days=valid_to_days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=True, data_encipherment=True,
                          key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False),
            critical=True,
        )  # fmt: skip
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.der", folder / f"{name}.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path, certificate


async def secure_server(cert_path: Path, key_path: Path) -> UaServer:
    server = UaServer(free_port(), {"state": ua.Variant(1, ua.VariantType.Int32)})

    async def setup(instance) -> None:  # noqa: ANN001
        await instance.load_certificate(str(cert_path))
        await instance.load_private_key(str(key_path))
        await instance.set_application_uri("urn:test:plc")
        instance.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])

    server.setup = setup
    return await server.start()


async def read_with_pin(tmp_path: Path, server: UaServer, pinned: Path) -> tuple[list, str]:
    config = OpcUaDeviceConfig(
        id="secure-1", endpoint=server.endpoint, tag_map="unused", timeout_ms=3000, reconnect_min_ms=50, reconnect_max_ms=100,
        security=OpcUaSecurity(policy="Basic256Sha256", mode="SignAndEncrypt", pki_dir=str(tmp_path / "pki"), server_certificate=str(pinned)),
    )  # fmt: skip
    async with open_device(config, tag_map(tmp_path, "pinned", "opcua", TAGS)) as client:
        samples = await client.read_all()
        return samples, client.last_error


async def test_wrong_pinned_certificate_rejected(tmp_path: Path) -> None:
    cert_path, key_path, certificate = write_certificate(tmp_path, "plc-server", valid_from_days=-1, valid_to_days=365)
    other_path, _, other = write_certificate(tmp_path, "other-plc", valid_from_days=-1, valid_to_days=365)
    server = await secure_server(cert_path, key_path)
    try:
        good, _ = await read_with_pin(tmp_path, server, cert_path)
        (rejected,), error = await read_with_pin(tmp_path, server, other_path)
    finally:
        await server.stop()
    assert [(s.status, s.value) for s in good] == [("good", 1)]
    assert (rejected.status, rejected.detail, rejected.value) == ("bad", "disconnected", None)
    assert error.startswith("BadCertificateUntrusted: server certificate ")
    assert thumbprint(certificate) in error
    assert thumbprint(other) in error
    assert str(other_path) in error
    # The certificate the server sent is kept for review, under its thumbprint, with what to do with it.
    saved = tmp_path / "pki" / "rejected" / f"{thumbprint(certificate)}.der"
    assert x509.load_der_x509_certificate(saved.read_bytes()) == certificate
    assert f"The server's certificate was saved as {saved}: if the PLC shows the same SHA-256 thumbprint, copy that file to {other_path}" in error


async def test_expired_certificate_rejected(tmp_path: Path) -> None:
    """The server presents an expired certificate; even pinned to exactly that certificate, the client rejects it."""
    cert_path, key_path, certificate = write_certificate(tmp_path, "expired-plc", valid_from_days=-30, valid_to_days=-2)
    server = await secure_server(cert_path, key_path)
    try:
        (rejected,), error = await read_with_pin(tmp_path, server, cert_path)
    finally:
        await server.stop()
    assert (rejected.status, rejected.detail) == ("bad", "disconnected")
    assert error.startswith(f"BadCertificateUntrusted: server certificate {thumbprint(certificate)} is outside its validity period")
    before, after = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    assert f"{before:%Y-%m-%d} .. {after:%Y-%m-%d}" in error
