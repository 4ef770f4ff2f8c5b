"""OPC UA security: every policy and mode, pinned and trusted server certificates, and the three kinds of user authentication."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import stat
from pathlib import Path

import pytest
import structlog
from asyncua import ua
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import User, UserRole
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from valuegate.adapters.devices import OpcUaAuth, OpcUaDeviceConfig, OpcUaSecurity, open_device
from valuegate.adapters.opcua import OpcUaSetupError
from valuegate.adapters.opcua_security import ensure_own_certificate, thumbprint
from valuegate.services import free_port

from .servers import UaServer, eventually, tag_map

URI = "urn:valuegate:test:line"
TAGS = [{"name": "state", "node": f"nsu={URI};s=Line/state"}]
POLICY_TYPES = {
    ("Basic256Sha256", "Sign"): ua.SecurityPolicyType.Basic256Sha256_Sign,
    ("Basic256Sha256", "SignAndEncrypt"): ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ("Aes128Sha256RsaOaep", "Sign"): ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
    ("Aes128Sha256RsaOaep", "SignAndEncrypt"): ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
}


def make_certificate(folder: Path, name: str, uri: str, usage) -> tuple[Path, Path, x509.Certificate]:
    """A self-signed certificate (DER) and key (PEM) for localhost, as a PLC vendor's server or a user would have."""
    key = cert_gen.generate_private_key()
    names = [x509.UniformResourceIdentifier(uri), x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    certificate = cert_gen.generate_self_signed_app_certificate(key, name, {"organizationName": "test"}, names, extended=[usage])
    cert_path, key_path = folder / f"{name}.der", folder / f"{name}.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return cert_path, key_path, certificate


class Users:
    """Accepts one user name and password, or one user certificate; records who logged in."""

    def __init__(self, certificate: x509.Certificate | None = None) -> None:
        self.certificate = certificate
        self.logins: list[str] = []

    def get_user(self, iserver, username=None, password=None, certificate=None):
        if username is not None:
            if (username, password) == ("operator", "s3cret"):
                self.logins.append(f"user:{username}")
                return User(role=UserRole.User)
            return None
        # On a secure channel the server passes the client's application certificate for anonymous logins too,
        # so a certificate counts as a user certificate only when one is expected.
        if isinstance(certificate, bytes):
            certificate = x509.load_der_x509_certificate(certificate)
        if self.certificate is not None:
            if certificate is not None and thumbprint(certificate) == thumbprint(self.certificate):
                self.logins.append("certificate")
                return User(role=UserRole.User)
            return None
        self.logins.append("anonymous")
        return User(role=UserRole.User)


async def secure_server(tmp_path: Path, policies: list, users: Users) -> tuple[UaServer, Path, x509.Certificate]:
    cert_path, key_path, certificate = make_certificate(tmp_path, "plc-server", "urn:test:plc", ExtendedKeyUsageOID.SERVER_AUTH)
    server = UaServer(free_port(), {"state": ua.Variant(1, ua.VariantType.Int32)})

    async def setup(instance) -> None:
        await instance.load_certificate(str(cert_path))
        await instance.load_private_key(str(key_path))
        await instance.set_application_uri("urn:test:plc")
        instance.set_security_policy(policies)
        instance.set_identity_tokens([ua.AnonymousIdentityToken, ua.UserNameIdentityToken, ua.X509IdentityToken])
        instance.iserver.user_manager = users

    server.setup = setup
    await server.start()
    return server, cert_path, certificate


def device(endpoint: str, tmp_path: Path, *, policy: str, mode: str, auth: OpcUaAuth | None = None, auth_retry_ms: int = 0,
           **security) -> OpcUaDeviceConfig:
    return OpcUaDeviceConfig(
        id="secure-1", endpoint=endpoint, tag_map="unused", timeout_ms=3000, reconnect_min_ms=50, reconnect_max_ms=100,
        security=OpcUaSecurity(policy=policy, mode=mode, pki_dir=str(tmp_path / "pki"), **security),
        auth=auth or OpcUaAuth(), auth_retry_ms=auth_retry_ms,
    )


async def test_every_policy_and_mode(tmp_path: Path):
    users = Users()
    server, cert_path, _ = await secure_server(tmp_path, list(POLICY_TYPES.values()), users)
    mapping = tag_map(tmp_path, "secure", "opcua", TAGS)
    channels = []
    try:
        for policy, mode in POLICY_TYPES:
            config = device(server.endpoint, tmp_path, policy=policy, mode=mode, server_certificate=str(cert_path))
            async with open_device(config, mapping) as client:
                (sample,) = await client.read_all()
                assert client.last_error == ""
                assert (sample.status, sample.value) == ("good", 1)
                channel = client._client.security_policy
                channels.append((channel.URI.rsplit("#", 1)[-1], channel.Mode.name))
    finally:
        await server.stop()
    # Policy URIs of OPC 10000-7 end in #Basic256Sha256 and #Aes128_Sha256_RsaOaep.
    uri_names = {"Basic256Sha256": "Basic256Sha256", "Aes128Sha256RsaOaep": "Aes128_Sha256_RsaOaep"}
    assert channels == [(uri_names[policy], mode) for policy, mode in POLICY_TYPES]
    assert users.logins == ["anonymous"] * 4
    for name in ("cert.der", "key.pem"):
        assert stat.S_IMODE(os.stat(tmp_path / "pki" / name).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "pki").st_mode) == 0o700


async def test_trusted_folder_and_rejection(tmp_path: Path):
    server, cert_path, certificate = await secure_server(tmp_path, [ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt], Users())
    trusted, other = tmp_path / "trusted", tmp_path / "other"
    trusted.mkdir()
    other.mkdir()
    (trusted / "plc.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    make_certificate(other, "someone-else", "urn:test:other", ExtendedKeyUsageOID.SERVER_AUTH)
    mapping = tag_map(tmp_path, "trust", "opcua", TAGS)
    try:
        config = device(server.endpoint, tmp_path, policy="Basic256Sha256", mode="SignAndEncrypt", trusted_dir=str(trusted))
        async with open_device(config, mapping) as client:
            (good,) = await client.read_all()
        config = device(server.endpoint, tmp_path, policy="Basic256Sha256", mode="SignAndEncrypt", trusted_dir=str(other))
        async with open_device(config, mapping) as client:
            (rejected,) = await client.read_all()
            error = client.last_error
    finally:
        await server.stop()
    assert good.status == "good"
    assert (rejected.status, rejected.detail) == ("bad", "disconnected")
    assert error.startswith("BadCertificateUntrusted")
    assert thumbprint(certificate) in error


async def test_username_password_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    users = Users()
    server, cert_path, _ = await secure_server(tmp_path, [ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt], users)
    mapping = tag_map(tmp_path, "user", "opcua", TAGS)
    auth = OpcUaAuth(method="username", username="operator", password_env="VG_TEST_OPCUA_PASSWORD")
    config = device(server.endpoint, tmp_path, policy="Basic256Sha256", mode="SignAndEncrypt", server_certificate=str(cert_path), auth=auth)
    try:
        monkeypatch.delenv("VG_TEST_OPCUA_PASSWORD", raising=False)
        with pytest.raises(OpcUaSetupError, match="VG_TEST_OPCUA_PASSWORD"):
            async with open_device(config, mapping):
                pass
        monkeypatch.setenv("VG_TEST_OPCUA_PASSWORD", "wrong")
        async with open_device(config, mapping) as client:
            (denied,) = await client.read_all()
            denied_error = client.last_error
        monkeypatch.setenv("VG_TEST_OPCUA_PASSWORD", "s3cret")
        async with open_device(config, mapping) as client:
            (sample,) = await client.read_all()
    finally:
        await server.stop()
    assert denied.detail == "disconnected"
    assert "BadUserAccessDenied" in denied_error or "BadIdentityTokenRejected" in denied_error
    assert sample.value == 1
    assert users.logins == ["user:operator"]


async def test_wrong_password_retry_warnings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Every retry fails with BadUserAccessDenied: the delays grow, and the warnings name the device and the status."""
    server, cert_path, _ = await secure_server(tmp_path, [ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt], Users())
    auth = OpcUaAuth(method="username", username="operator", password_env="VG_TEST_OPCUA_PASSWORD")
    config = device(server.endpoint, tmp_path, policy="Basic256Sha256", mode="SignAndEncrypt", server_certificate=str(cert_path), auth=auth)
    monkeypatch.setenv("VG_TEST_OPCUA_PASSWORD", "wrong-Pa55word")
    batches: list[list] = []

    async def read(stream) -> None:  # noqa: ANN001
        async for batch in stream:
            batches.append(batch)

    try:
        with structlog.testing.capture_logs() as logged:
            async with open_device(config, tag_map(tmp_path, "denied", "opcua", TAGS)) as client:
                reader = asyncio.create_task(read(client.stream()))
                await eventually(lambda: client.stats["connect_failures"] >= 5, timeout_s=30)
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
    finally:
        await server.stop()

    assert [[(s.status, s.detail) for s in batch] for batch in batches] == [[("bad", "disconnected")]], "one outage batch"
    warned = [e for e in logged if e["log_level"] == "warning"]
    assert [(e["event"], e.get("attempt"), e.get("repeats_not_logged")) for e in warned] == [
        ("opcua.connect_failed", None, None), ("opcua.retry_failed", 2, 0)
    ], "later retries are held back for a minute"
    for event in warned:
        assert event["device"] == "secure-1"
        assert event["status"] in ("BadUserAccessDenied", "BadIdentityTokenRejected")
        assert event["retry_in_s"] > 0
    assert "wrong-Pa55word" not in repr(logged)
    # No connect succeeded, so the delays double to the cap (50 ms, then 100 ms) and never restart.
    draws = list(client.backoff.delays)
    assert None not in draws
    assert [nominal for nominal, _ in draws[:3]] == [0.05, 0.1, 0.1]


async def test_refused_user_waits_before_the_next_log_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A wrong password is retried after auth_retry_ms, not at the reconnect backoff, so that a PLC does not lock the account."""
    users = Users()
    server, cert_path, _ = await secure_server(tmp_path, [ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt], users)
    auth = OpcUaAuth(method="username", username="operator", password_env="VG_TEST_OPCUA_PASSWORD")
    config = device(server.endpoint, tmp_path, policy="Basic256Sha256", mode="SignAndEncrypt", server_certificate=str(cert_path), auth=auth,
                    auth_retry_ms=1500)
    monkeypatch.setenv("VG_TEST_OPCUA_PASSWORD", "wrong-Pa55word")

    async def read(stream) -> None:  # noqa: ANN001
        async for _batch in stream:
            pass

    try:
        with structlog.testing.capture_logs() as logged:
            async with open_device(config, tag_map(tmp_path, "refused", "opcua", TAGS)) as client:
                reader = asyncio.create_task(read(client.stream()))
                await asyncio.sleep(2.5)
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
    finally:
        await server.stop()
    # The connect on opening and the stream's first attempt, then one after 1.5 s. The 50 ms backoff alone would have
    # tried about 25 times in 2.5 s.
    assert client.stats["connect_failures"] == 3
    failed = [e for e in logged if e["event"] in ("opcua.connect_failed", "opcua.retry_failed")]
    assert failed and all(e["retry_in_s"] == 1.5 for e in failed)


async def test_user_certificate(tmp_path: Path):
    user_cert, user_key, user_certificate = make_certificate(tmp_path, "engineer", "urn:test:engineer", ExtendedKeyUsageOID.CLIENT_AUTH)
    users = Users(user_certificate)
    server, cert_path, _ = await secure_server(tmp_path, [ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt], users)
    auth = OpcUaAuth(method="certificate", certificate=str(user_cert), private_key=str(user_key))
    config = device(server.endpoint, tmp_path, policy="Basic256Sha256", mode="SignAndEncrypt", server_certificate=str(cert_path), auth=auth)
    try:
        async with open_device(config, tag_map(tmp_path, "usercert", "opcua", TAGS)) as client:
            (sample,) = await client.read_all()
    finally:
        await server.stop()
    assert sample.value == 1
    assert users.logins == ["certificate"]


def test_own_certificate_is_kept_and_narrowed(tmp_path: Path):
    first = ensure_own_certificate(tmp_path / "pki", "urn:valuegate:gateway:test")
    der = first.cert_path.read_bytes()
    os.chmod(first.key_path, 0o644)
    second = ensure_own_certificate(tmp_path / "pki", "urn:valuegate:gateway:test")
    assert second.cert_path.read_bytes() == der
    assert stat.S_IMODE(os.stat(second.key_path).st_mode) == 0o600
    certificate = x509.load_der_x509_certificate(der)
    uris = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.UniformResourceIdentifier)
    assert uris == ["urn:valuegate:gateway:test"]


@pytest.mark.parametrize(("policy", "mode"), [("None", "None"), ("Basic256Sha256", "Sign")])
async def test_missing_endpoint_named_alike_for_every_policy(tmp_path: Path, policy: str, mode: str):
    """A server with only Basic256Sha256/SignAndEncrypt: asking for None or for Sign gives the same message, listing what it offers."""
    server, cert_path, _ = await secure_server(tmp_path, [ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt], Users())
    security = {"server_certificate": str(cert_path)} if policy != "None" else {}
    config = device(server.endpoint, tmp_path, policy=policy, mode=mode, **security)
    try:
        with pytest.raises(OpcUaSetupError) as caught:
            async with open_device(config, tag_map(tmp_path, "endpoints", "opcua", TAGS)):
                pass
    finally:
        await server.stop()
    assert str(caught.value) == f"device secure-1: the server offers no endpoint with {policy}/{mode}; it offers Basic256Sha256/SignAndEncrypt"
