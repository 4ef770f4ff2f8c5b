"""MQTT over TLS to a real Mosquitto: the broker's certificate is verified and the agent presents its own (mutual TLS)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
import structlog.testing
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from valuegate.services import MosquittoServer, free_port

from .conftest import MQTT_PASSWORD
from .helpers import GATEWAY, SITE, TENANT
from .standin import AckResponder
from .test_publish import gateway, wait_until

pytestmark = pytest.mark.mosquitto


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _issue(subject: str, issuer_key, issuer_name: x509.Name, *, ca: bool = False, san: list | None = None):  # noqa: ANN001, ANN202
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name if issuer_key is not None else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    certificate = builder.sign(issuer_key if issuer_key is not None else key, hashes.SHA256())
    return key, certificate


def _write(folder: Path, name: str, key, certificate) -> None:  # noqa: ANN001
    (folder / f"{name}.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / f"{name}.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    )


@pytest.fixture
def pki() -> Iterator[Path]:
    # Outside pytest's tmp_path, whose parent only root may enter: the broker runs as the mosquitto user.
    folder = Path(tempfile.mkdtemp(prefix="valuegate-pki-"))
    ca_key, ca = _issue("valuegate test CA", None, _name("valuegate test CA"), ca=True)
    _write(folder, "ca", ca_key, ca)
    server_key, server = _issue("broker", ca_key, ca.subject, san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
    _write(folder, "server", server_key, server)
    client_key, client = _issue(GATEWAY, ca_key, ca.subject)
    _write(folder, "client", client_key, client)
    other_key, other = _issue("another CA", None, _name("another CA"), ca=True)
    _write(folder, "other-ca", other_key, other)
    for path in folder.iterdir():
        path.chmod(0o644)  # the broker runs as the mosquitto user
    (folder / "client.key").chmod(0o600)
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def tls_broker(pki: Path):  # noqa: ANN201
    plain = free_port()
    settings = [
        f"cafile {pki / 'ca.pem'}",
        f"certfile {pki / 'server.pem'}",
        f"keyfile {pki / 'server.key'}",
        "require_certificate true",
        f"listener {plain} 127.0.0.1",  # for the stand-in ingest
    ]
    with MosquittoServer(extra_config=settings) as broker:
        broker.plain_port = plain  # type: ignore[attr-defined]
        yield broker


async def test_mutual_tls_delivers(tmp_path: Path, pki: Path, tls_broker: MosquittoServer) -> None:
    cloud = AckResponder(tls_broker.plain_port, tenant=TENANT, site=SITE, gateway=GATEWAY).start()  # type: ignore[attr-defined]
    tls = {"ca_file": str(pki / "ca.pem"), "cert_file": str(pki / "client.pem"), "key_file": str(pki / "client.key")}
    try:
        async with gateway(tmp_path / "gw", tls_broker.port, mqtt={"tls": tls}) as gw:
            await gw.issue(4)
            assert await gw.wait_empty(15) == 0
        assert cloud.stored() == 4
    finally:
        cloud.stop()


@pytest.mark.parametrize(
    ("case", "tls"),
    [
        ("no client certificate", {"ca_file": "ca.pem"}),
        ("broker not signed by the trusted CA", {"ca_file": "other-ca.pem", "cert_file": "client.pem", "key_file": "client.key"}),
    ],
)
async def test_tls_failures_never_connect(tmp_path: Path, pki: Path, tls_broker: MosquittoServer, case: str, tls: dict) -> None:
    settings = {name: str(pki / value) for name, value in tls.items()}
    async with gateway(tmp_path / "gw", tls_broker.port, mqtt={"tls": settings}) as gw:
        assert await wait_until(lambda: gw.publisher.metrics.value("valuegate_mqtt_connect_failures_total") >= 2, 10), case
        await asyncio.sleep(0.2)
        assert gw.publisher.connections == 0, case
        assert not gw.publisher.connected, case


def test_client_key_readable_by_others_is_rejected(tmp_path: Path, pki: Path) -> None:
    from valuegate.adapters.errors import ConfigError

    from .helpers import load

    os.chmod(pki / "client.key", 0o644)
    tls = {"ca_file": str(pki / "ca.pem"), "cert_file": str(pki / "client.pem"), "key_file": str(pki / "client.key")}
    with pytest.raises(ConfigError) as caught:
        load(tmp_path / "gw", 8883, mqtt={"tls": tls})
    assert "other users can read the key file (mode 0644); run chmod 600 on it" in str(caught.value)


async def test_password_from_environment(tmp_path: Path, password_broker: MosquittoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VG_TEST_MQTT_PASSWORD", MQTT_PASSWORD)
    async with gateway(tmp_path / "good", password_broker.port, mqtt={"username": GATEWAY, "password_env": "VG_TEST_MQTT_PASSWORD"}) as gw:
        assert await wait_until(lambda: gw.publisher.connected, 10)
    monkeypatch.setenv("VG_TEST_MQTT_PASSWORD", "wrong")
    with structlog.testing.capture_logs() as logs:
        async with gateway(tmp_path / "bad", password_broker.port, mqtt={"username": GATEWAY, "password_env": "VG_TEST_MQTT_PASSWORD"}) as gw:
            assert await wait_until(lambda: gw.publisher.metrics.value("valuegate_mqtt_connect_failures_total") >= 1, 10)
            assert gw.publisher.connections == 0
    # The log names what the refusal means for the configuration, not only its code.
    refused = [entry for entry in logs if "broker refused the connection" in str(entry.get("reason", ""))]
    assert refused, logs
    assert "check mqtt.username" in refused[0]["reason"]


@pytest.mark.parametrize("case", ["no client certificate", "client certificate from another CA"])
async def test_rejected_client_certificate_hint(tmp_path: Path, pki: Path, tls_broker: MosquittoServer, case: str) -> None:
    tls = {"ca_file": str(pki / "ca.pem")}
    if case == "client certificate from another CA":
        stranger_ca_key, stranger_ca = _issue("stranger CA", None, _name("stranger CA"), ca=True)
        key, certificate = _issue(GATEWAY, stranger_ca_key, stranger_ca.subject)
        _write(tmp_path, "stranger", key, certificate)
        (tmp_path / "stranger.key").chmod(0o600)
        tls |= {"cert_file": str(tmp_path / "stranger.pem"), "key_file": str(tmp_path / "stranger.key")}
    with structlog.testing.capture_logs() as logs:
        async with gateway(tmp_path / "gw", tls_broker.port, mqtt={"tls": tls}) as gw:
            assert await wait_until(lambda: gw.publisher.metrics.value("valuegate_mqtt_connect_failures_total") >= 1, 10), case
    failed = [entry for entry in logs if entry["event"] == "mqtt_connect_failed"]
    assert failed, logs
    reason = failed[0]["reason"]
    assert "connection closed before CONNACK" in reason, reason
    if case == "no client certificate":
        assert "the broker may require a client certificate: set mqtt.tls.cert_file and key_file" in reason
    else:
        assert "the broker may have rejected the client certificate" in reason
        assert "the broker's cafile contains the CA that issued the certificate" in reason
