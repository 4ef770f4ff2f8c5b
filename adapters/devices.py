"""Device settings of an edge configuration, and opening a client for one device."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import msgspec

from .errors import ConfigError, ConfigIssue
from .samples import Sample
from .tagmap import TagMap, load_tag_map, shipped_tag_map_dir
from .yamlsource import YamlSource, load_yaml

__all__ = (
    "DeviceClient",
    "DeviceConfig",
    "ModbusDeviceConfig",
    "OpcUaAuth",
    "OpcUaDeviceConfig",
    "OpcUaSecurity",
    "load_devices",
    "open_device",
)


class _Settings(msgspec.Struct, forbid_unknown_fields=True):
    pass


class ModbusDeviceConfig(_Settings, tag_field="protocol", tag="modbus"):
    """A Modbus TCP device (``protocol: modbus``)."""

    id: str
    """Device id, unique in the configuration; every sample carries it."""
    host: str
    """Host name or IP address of the PLC or gateway."""
    tag_map: str
    """Tag map file: absolute, relative to the configuration file, or relative to the shipped maps folder."""
    port: int = 502
    """TCP port."""
    unit_id: int = 1
    """Modbus unit id (slave id) of the device, 0..255."""
    poll_ms: int = 1000
    """Poll period in milliseconds: one read of every tag per period."""
    timeout_ms: int = 1000
    """Time to wait for one response, in milliseconds."""
    max_registers: int = 125
    """Most registers read by one request (the protocol allows 125; some devices fewer)."""
    max_bits: int = 2000
    """Most coils or discrete inputs read by one request (the protocol allows 2000)."""
    max_gap: int = 0
    """Unused addresses a grouped request may span between two tags; 0 groups only adjacent tags."""
    reconnect_min_ms: int = 500
    """First reconnect delay in milliseconds; it doubles per failed attempt."""
    reconnect_max_ms: int = 30000
    """Cap of the reconnect delay in milliseconds."""

    @property
    def protocol(self) -> Literal["modbus"]:
        return "modbus"


class OpcUaSecurity(_Settings):
    """Secure channel settings; the policy and mode are both ``None`` or both set."""

    policy: Literal["None", "Basic256Sha256", "Aes128Sha256RsaOaep"] = "None"
    """Security policy of the secure channel."""
    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    """Message security mode."""
    pki_dir: str = "pki"
    """Folder of the gateway's own application certificate and key, created on first run (key file mode 0600)."""
    application_uri: str = "urn:valuegate:gateway"
    """Application URI written into the gateway's certificate and sent in CreateSession."""
    server_certificate: str | None = None
    """Pinned server certificate file (DER or PEM): only this certificate is accepted."""
    trusted_dir: str | None = None
    """Folder of trusted server certificates (DER or PEM): the server's must be one of them."""


class OpcUaAuth(_Settings):
    """User authentication for the session."""

    method: Literal["anonymous", "username", "certificate"] = "anonymous"
    """Kind of user identity token."""
    username: str | None = None
    """User name, for ``username``."""
    password_env: str | None = None
    """Name of the environment variable holding the password, for ``username``; the password is never in the file."""
    certificate: str | None = None
    """User certificate file (DER or PEM), for ``certificate``."""
    private_key: str | None = None
    """Private key file (PEM) of the user certificate, for ``certificate``."""


class OpcUaDeviceConfig(_Settings, tag_field="protocol", tag="opcua"):
    """An OPC UA server (``protocol: opcua``)."""

    id: str
    """Device id, unique in the configuration; every sample carries it."""
    endpoint: str
    """Endpoint URL, ``opc.tcp://host:port/path``."""
    tag_map: str
    """Tag map file: absolute, relative to the configuration file, or relative to the shipped maps folder."""
    security: OpcUaSecurity = msgspec.field(default_factory=OpcUaSecurity)
    """Secure channel settings."""
    auth: OpcUaAuth = msgspec.field(default_factory=OpcUaAuth)
    """User authentication."""
    mode: Literal["auto", "subscribe", "poll"] = "auto"
    """``subscribe`` for data-change notifications, ``poll`` for periodic reads; ``auto`` polls only when the server cannot subscribe."""
    publishing_interval_ms: int = 500
    """Requested publishing interval of the subscription, in milliseconds."""
    sampling_ms: int = 250
    """Requested sampling interval of tags that do not set their own, in milliseconds."""
    poll_ms: int = 1000
    """Read period in milliseconds when polling."""
    timeout_ms: int = 4000
    """Time to wait for one service response, in milliseconds."""
    session_timeout_ms: int = 60000
    """Requested session timeout; keep-alive reads follow the timeout the server grants."""
    reconnect_min_ms: int = 500
    """First reconnect delay in milliseconds; it doubles per failed attempt."""
    reconnect_max_ms: int = 30000
    """Cap of the reconnect delay in milliseconds."""
    auth_retry_ms: int = 300000
    """Minimum delay in milliseconds after the server rejected the user (a wrong password), so that a PLC that locks an
    account after a few failed log-ins does not lock it. The agent reads the password only at start anyway."""

    @property
    def protocol(self) -> Literal["opcua"]:
        return "opcua"


DeviceConfig = ModbusDeviceConfig | OpcUaDeviceConfig


class _EdgeFile(msgspec.Struct):
    devices: list[DeviceConfig]


@runtime_checkable
class DeviceClient(Protocol):
    """A connected PLC client, as returned by :func:`open_device`."""

    stats: dict[str, int]
    connected: bool

    async def read_all(self) -> list[Sample]:
        """Read every tag once; a tag that cannot be read comes back as a bad sample with the reason."""
        ...

    def stream(self) -> AsyncIterator[list[Sample]]:
        """Yield sample batches (one per poll, or per notification message) until cancelled, reconnecting as needed."""
        ...


def _resolve(base: Path, name: str) -> Path:
    path = Path(name).expanduser()
    if path.is_absolute():
        return path
    local = base / path
    if local.exists():
        return local.resolve()
    shipped = shipped_tag_map_dir() / path
    return shipped if shipped.exists() else local


def _check_ranges(source: YamlSource, where: str, device: DeviceConfig, issues: list[ConfigIssue]) -> None:
    positive = ["poll_ms", "timeout_ms", "reconnect_min_ms", "reconnect_max_ms"]
    if isinstance(device, ModbusDeviceConfig):
        if not 1 <= device.port <= 65535:
            issues.append(source.issue(f"{where}.port", "port is outside the TCP range", allowed="1..65535"))
        if not 0 <= device.unit_id <= 255:
            issues.append(source.issue(f"{where}.unit_id", "unit id is outside the Modbus range", allowed="0..255"))
        if not 1 <= device.max_registers <= 125:
            issues.append(source.issue(f"{where}.max_registers", "invalid registers per request", allowed="1..125"))
        if not 1 <= device.max_bits <= 2000:
            issues.append(source.issue(f"{where}.max_bits", "invalid bits per request", allowed="1..2000"))
        if device.max_gap < 0:
            issues.append(source.issue(f"{where}.max_gap", "must not be negative", allowed="0..124"))
    else:
        positive += ["publishing_interval_ms", "sampling_ms", "session_timeout_ms"]
        if not device.endpoint.startswith("opc.tcp://"):
            issues.append(source.issue(f"{where}.endpoint", "not an OPC UA TCP endpoint", allowed="opc.tcp://host:port[/path]"))
        _check_opcua_security(source, where, device, issues)
    for field in positive:
        if getattr(device, field) <= 0:
            issues.append(source.issue(f"{where}.{field}", "must be a positive number of milliseconds", allowed="a whole number above 0"))
    if isinstance(device, OpcUaDeviceConfig) and device.auth_retry_ms < 0:
        issues.append(source.issue(f"{where}.auth_retry_ms", "must not be negative", allowed="0 or more milliseconds (default 300000)"))
    if device.reconnect_max_ms < device.reconnect_min_ms:
        issues.append(
            source.issue(f"{where}.reconnect_max_ms", f"must be at least reconnect_min_ms ({device.reconnect_min_ms})", allowed=f"{device.reconnect_min_ms} or more milliseconds")
        )


def _check_opcua_security(source: YamlSource, where: str, device: OpcUaDeviceConfig, issues: list[ConfigIssue]) -> None:
    security, auth = device.security, device.auth
    if (security.policy == "None") != (security.mode == "None"):
        issues.append(
            source.issue(
                f"{where}.security.mode",
                f"policy {security.policy} cannot be used with mode {security.mode}",
                allowed="policy None with mode None; Basic256Sha256 or Aes128Sha256RsaOaep with Sign or SignAndEncrypt",
            )
        )
    if security.policy != "None" and security.server_certificate is None and security.trusted_dir is None:
        issues.append(
            source.issue(
                f"{where}.security",
                "a secure channel needs the server certificate pinned (server_certificate) or a trusted_dir",
                allowed="server_certificate: <file> or trusted_dir: <folder>",
            )
        )
    if auth.method == "username" and (not auth.username or not auth.password_env):
        issues.append(source.issue(f"{where}.auth", "username authentication needs `username` and `password_env`", allowed="username: <user> and password_env: <variable name>"))
    if auth.method == "certificate" and (not auth.certificate or not auth.private_key):
        issues.append(source.issue(f"{where}.auth", "certificate authentication needs `certificate` and `private_key`", allowed="certificate: <file> and private_key: <file>"))


def _check_security_files(source: YamlSource, where: str, device: OpcUaDeviceConfig, issues: list[ConfigIssue]) -> None:
    """Report certificate and key files (and the trusted folder) that the settings name but that do not exist."""
    named = [
        ("security.server_certificate", device.security.server_certificate, "file"),
        ("security.trusted_dir", device.security.trusted_dir, "folder"),
        ("auth.certificate", device.auth.certificate, "file"),
        ("auth.private_key", device.auth.private_key, "file"),
    ]
    for field, path, kind in named:
        if path is None:
            continue
        exists = Path(path).is_dir() if kind == "folder" else Path(path).is_file()
        if not exists:
            issues.append(
                source.issue(f"{where}.{field}", f"{kind} not found; give a path relative to this file or an absolute one", value=path)
            )


def _with_paths(base: Path, device: DeviceConfig) -> DeviceConfig:
    """Return ``device`` with every file path made absolute against the configuration's folder."""
    updates: dict[str, object] = {"tag_map": str(_resolve(base, device.tag_map))}
    if isinstance(device, OpcUaDeviceConfig):
        security, auth = device.security, device.auth

        def absolute(name: str | None) -> str | None:
            return None if name is None else str((base / Path(name).expanduser()).resolve())

        updates["security"] = msgspec.structs.replace(
            security,
            pki_dir=absolute(security.pki_dir),
            server_certificate=absolute(security.server_certificate),
            trusted_dir=absolute(security.trusted_dir),
        )
        updates["auth"] = msgspec.structs.replace(auth, certificate=absolute(auth.certificate), private_key=absolute(auth.private_key))
    return msgspec.structs.replace(device, **updates)


def _check_tag_map(source: YamlSource, where: str, tag_map_file: str, protocol: str | None, issues: list[ConfigIssue]) -> None:
    """Report a missing tag map file, every problem inside the map, and a map for another protocol than ``protocol``."""
    if not Path(tag_map_file).is_file():
        issues.append(source.issue(f"{where}.tag_map", "tag map file not found; give a path relative to this file or to the shipped maps folder"))
        return
    try:
        tag_map = load_tag_map(tag_map_file)
    except ConfigError as exc:
        issues.extend(exc.issues)
        return
    if protocol is not None and tag_map.protocol != protocol:
        message = f"tag map {tag_map.name} is for {tag_map.protocol}, the device uses {protocol}"
        issues.append(source.issue(f"{where}.tag_map", message, allowed=f"a tag map with protocol: {protocol}"))


def load_devices(path: str | Path) -> list[DeviceConfig]:
    """Read the ``devices:`` list of an edge configuration; other keys are left to their owners.

    Raises :class:`ConfigError` listing every problem with file, line, field,
    value and allowed values, including problems in the tag maps named. Each
    device is checked on its own: a device with a type error gets no range
    checks, but the other devices and the tag map it names still do.
    """
    source = load_yaml(path)
    if not isinstance(source.data, dict) or "devices" not in source.data:
        raise ConfigError([source.issue("$", "an edge configuration needs a `devices:` list")])
    raw_devices = source.data["devices"]
    check = source.type_check(_EdgeFile, data={"devices": raw_devices})
    issues: list[ConfigIssue] = list(check.issues)
    if not isinstance(raw_devices, list):
        raise ConfigError(issues)
    base = source.path.resolve().parent
    usable = dict(check.items("$.devices", raw_devices, DeviceConfig))
    seen: dict[str, int] = {}
    devices: list[DeviceConfig] = []
    for index, raw in enumerate(raw_devices):
        where = f"$.devices[{index}]"
        raw = raw if isinstance(raw, dict) else {}
        device_id = raw.get("id")
        if isinstance(device_id, str) and device_id in seen:
            issues.append(source.issue(f"{where}.id", f"duplicate device id, first used at devices[{seen[device_id]}]", allowed="an id no other device uses"))
        if isinstance(device_id, str):
            seen.setdefault(device_id, index)
        device = usable.get(index)
        if device is None:
            # The device has a type error, reported above; its tag map can still be checked.
            tag_map_file = raw.get("tag_map")
            if isinstance(tag_map_file, str) and check.usable(f"{where}.tag_map"):
                protocol = raw.get("protocol") if raw.get("protocol") in ("modbus", "opcua") else None
                _check_tag_map(source, where, str(_resolve(base, tag_map_file)), protocol, issues)
            continue
        _check_ranges(source, where, device, issues)
        device = _with_paths(base, device)
        if isinstance(device, OpcUaDeviceConfig):
            _check_security_files(source, where, device, issues)
        _check_tag_map(source, where, device.tag_map, device.protocol, issues)
        devices.append(device)
    if issues:
        raise ConfigError(issues)
    return devices


@contextlib.asynccontextmanager
async def open_device(config: DeviceConfig, tag_map: TagMap) -> AsyncIterator[DeviceClient]:
    """Open a client for ``config``; it connects on entry (a failure there is retried by the client) and closes on exit."""
    if tag_map.protocol != config.protocol:
        raise ValueError(f"tag map {tag_map.name} is for {tag_map.protocol} but device {config.id} uses {config.protocol}")
    client: DeviceClient
    if isinstance(config, ModbusDeviceConfig):
        from .modbus import ModbusClient

        client = ModbusClient(config, tag_map)
    else:
        from .opcua import OpcUaClient

        client = OpcUaClient(config, tag_map)
    async with client:  # type: ignore[attr-defined]
        yield client
