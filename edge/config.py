"""The edge agent's configuration file (``edge.yaml``, schema ``valuegate/edge/v1``) and its validation."""

from __future__ import annotations

import os
import re
import zoneinfo
from pathlib import Path
from typing import Any, Literal

import msgspec

from valuegate.adapters.errors import ConfigError, ConfigIssue
from valuegate.adapters.yamlsource import YamlSource, load_yaml
from valuegate.adapters.yamltypes import TypeCheck

__all__ = (
    "EDGE_SCHEMA",
    "TlsConfig",
    "MqttConfig",
    "MetricsConfig",
    "SpoolConfig",
    "PublishConfig",
    "MachineEntry",
    "Machine",
    "EdgeFile",
    "EdgeConfig",
    "load_config",
)

EDGE_SCHEMA = "valuegate/edge/v1"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ID_ALLOWED = "1-64 letters, digits, '_', '.', '-', starting with a letter or digit (no '/', '+', '#', ':')"


class _Spec(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


class TlsConfig(_Spec):
    """TLS to the broker: the server is always verified; a client certificate turns on mutual TLS."""

    ca_file: str | None = None
    """CA bundle that signed the broker's certificate; the system store when omitted."""
    cert_file: str | None = None
    """Client certificate (PEM) for mutual TLS."""
    key_file: str | None = None
    """Private key of the client certificate (PEM); must not be readable by other users."""


class MqttConfig(_Spec):
    """Broker connection: MQTT v5, QoS 1, persistent session."""

    host: str
    """Broker host name or address."""
    port: int = 1883
    """Broker TCP port (8883 is usual with TLS)."""
    tls: TlsConfig | None = None
    """TLS settings; plain TCP when omitted."""
    username: str | None = None
    """User name sent in CONNECT."""
    password_env: str | None = None
    """Name of the environment variable holding the password; the password itself never goes in this file."""
    session_expiry_s: int = 7 * 24 * 3600
    """How long the broker keeps the session (subscriptions and queued acks) while the agent is away, in seconds."""
    keepalive_s: int = 30
    """MQTT keep-alive interval in seconds."""
    client_id: str | None = None
    """MQTT client id; ``valuegate:{tenant}:{site}:{gateway}`` when omitted."""
    reconnect_min_s: float = 1.0
    """First reconnect delay in seconds; doubles with jitter on each failure."""
    reconnect_max_s: float = 60.0
    """Maximum reconnect delay in seconds."""
    takeover_retry_s: float = 600.0
    """After another agent with the same client id took the session over, wait this long before connecting again."""


class MetricsConfig(_Spec):
    """Health and Prometheus metrics endpoint."""

    host: str = "127.0.0.1"
    """Listen address; keep it on loopback and let a local scraper or reverse proxy reach it."""
    port: int = 9464
    """Listen port; 0 turns the endpoint off."""


class SpoolConfig(_Spec):
    """On-disk spool (SQLite) limits."""

    max_mb: float = 1024.0
    """Disk cap of the spool in MiB; raw samples are pruned, oldest first, to stay under it."""
    alarm_ratio: float = 0.8
    """Share of the cap at which the spool alarm is raised (log and metric)."""
    sample_sync: Literal["full", "normal"] = "full"
    """SQLite synchronous level for sample batches: ``full`` survives power loss, ``normal`` survives a crash."""
    telemetry_retention_h: float = 72.0
    """Hours to keep published telemetry records, acknowledged or not, so that the cloud can ask for them again."""


class PublishConfig(_Spec):
    """Outbox publishing."""

    window: int = 200
    """Messages published and not yet acknowledged by the broker, at most."""
    telemetry_batch_records: int = 500
    """Per-minute records in one telemetry message, at most (fewer when the broker's maximum packet size requires)."""
    ack_timeout_s: float = 60.0
    """Republish unacknowledged vouchers when the cloud's ack has not advanced for this many seconds."""


class MachineEntry(_Spec):
    """Machine id and plant time zone of one device."""

    device: str
    """Device id from ``devices:``."""
    id: str | None = None
    """Machine id in vouchers and records; the device id when omitted."""
    time_zone: str | None = None
    """IANA time zone whose midnight starts the machine's plant days; the file's ``time_zone`` when omitted."""


class Machine(msgspec.Struct, frozen=True):
    """A device with the machine id and plant time zone the edge uses for it."""

    id: str
    device: Any
    time_zone: str


class EdgeFile(_Spec):
    """The settings an ``edge.yaml`` may contain."""

    schema: str
    gateway: str
    """Gateway id: the voucher id prefix and part of every MQTT topic."""
    tenant: str
    site: str
    mqtt: MqttConfig
    state_dir: str
    """Folder for the spool, the keys and the numba cache; must be writable by the agent's user."""
    devices: list[dict[str, Any]] = []
    """PLC connections, read by :func:`valuegate.adapters.devices.load_devices`."""
    time_zone: str = "UTC"
    """IANA time zone of the plant, for example Asia/Shanghai; plant days start at its midnight."""
    machines: list[MachineEntry] = []
    """Machine ids and time zones per device, where they differ from the device id and ``time_zone``."""
    contracts: list[str] = []
    """Contract files whose anchors this gateway measures."""
    metrics: MetricsConfig = MetricsConfig()
    spool: SpoolConfig = SpoolConfig()
    publish: PublishConfig = PublishConfig()


class EdgeConfig(EdgeFile):
    """A parsed ``edge.yaml`` with the file it came from."""

    path: str = ""
    """The file this configuration came from (filled in by :func:`load_config`, never read from the file)."""

    @property
    def base_dir(self) -> Path:
        return Path(self.path).parent if self.path else Path.cwd()

    def resolve(self, name: str) -> Path:
        """Return ``name`` as a path, relative names taken from the configuration file's folder."""
        path = Path(name).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    @property
    def state_path(self) -> Path:
        return self.resolve(self.state_dir)

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"valuegate:{self.tenant}:{self.site}:{self.gateway}"

    def topic(self, kind: str) -> str:
        return f"valuegate/v1/{self.tenant}/{self.site}/{self.gateway}/{kind}"

    def machine_list(self) -> list[Machine]:
        """Return one :class:`Machine` per device, with the devices as the adapters loaded them."""
        from valuegate.adapters.devices import load_devices

        entries = {entry.device: entry for entry in self.machines}
        machines = []
        for device in load_devices(self.path):
            entry = entries.get(device.id)
            machine_id = entry.id if entry and entry.id else device.id
            machines.append(Machine(machine_id, device, entry.time_zone if entry and entry.time_zone else self.time_zone))
        return machines

    def password(self) -> str | None:
        return os.environ.get(self.mqtt.password_env) if self.mqtt.password_env else None


def _resolve(base_dir: Path, name: str) -> Path:
    """Return ``name`` as a path, a relative name taken from ``base_dir`` (as :meth:`EdgeConfig.resolve` does)."""
    path = Path(name).expanduser()
    return path if path.is_absolute() else base_dir / path


def _check_ids(source: YamlSource, check: TypeCheck, issues: list[ConfigIssue]) -> None:
    data = source.data
    schema = check.value("$.schema", data.get("schema"), str)
    if schema is not None and schema != EDGE_SCHEMA:
        issues.append(source.issue("$.schema", "unknown edge configuration schema", allowed=EDGE_SCHEMA))
    for field in ("gateway", "tenant", "site"):
        value = check.value(f"$.{field}", data.get(field), str)
        if value is not None and not _ID.match(value):
            issues.append(source.issue(f"$.{field}", "invalid id: it becomes an MQTT topic level", allowed=_ID_ALLOWED))


def _check_mqtt(source: YamlSource, mqtt: MqttConfig, base_dir: Path, issues: list[ConfigIssue]) -> None:
    if not 1 <= mqtt.port <= 65535:
        issues.append(source.issue("$.mqtt.port", "port is out of range", allowed="1..65535"))
    if not 5 <= mqtt.keepalive_s <= 65535:
        issues.append(source.issue("$.mqtt.keepalive_s", "keep-alive is out of range", allowed="5..65535 seconds"))
    if not 0 <= mqtt.session_expiry_s <= 0xFFFFFFFF:
        issues.append(source.issue("$.mqtt.session_expiry_s", "session expiry is out of range", allowed="0..4294967295 seconds"))
    if not 0 < mqtt.reconnect_min_s <= mqtt.reconnect_max_s:
        issues.append(
            source.issue(
                "$.mqtt.reconnect_min_s",
                "reconnect delays need 0 < reconnect_min_s <= reconnect_max_s",
                allowed=f"above 0 and at most reconnect_max_s ({mqtt.reconnect_max_s:g}) seconds",
            )
        )
    if mqtt.tls is None:
        return
    for name in ("ca_file", "cert_file", "key_file"):
        value = getattr(mqtt.tls, name)
        if value is not None and not _resolve(base_dir, value).is_file():
            issues.append(source.issue(f"$.mqtt.tls.{name}", "file not found", value=str(_resolve(base_dir, value))))
    key_file = _resolve(base_dir, mqtt.tls.key_file) if mqtt.tls.key_file else None
    if key_file is not None and key_file.is_file() and key_file.stat().st_mode & 0o077:
        mode = f"{key_file.stat().st_mode & 0o777:04o}"
        issues.append(source.issue("$.mqtt.tls.key_file", f"other users can read the key file (mode {mode}); run chmod 600 on it", value=str(key_file)))
    if (mqtt.tls.cert_file is None) != (mqtt.tls.key_file is None):
        issues.append(source.issue("$.mqtt.tls", "mutual TLS needs both cert_file and key_file", allowed="both cert_file and key_file, or neither"))


def _check_secrets(source: YamlSource, mqtt: MqttConfig | None, issues: list[ConfigIssue]) -> None:
    """Report each password variable that the file names but the environment does not set."""
    secrets = [("$.mqtt.password_env", mqtt.password_env if mqtt is not None else None)]
    devices = source.data.get("devices")
    for index, device in enumerate(devices if isinstance(devices, list) else []):
        # An OPC UA user's password: without it the device never connects, so the agent would run without its data.
        auth = device.get("auth") if isinstance(device, dict) else None
        variable = auth.get("password_env") if isinstance(auth, dict) else None
        if isinstance(variable, str) and variable:
            secrets.append((f"$.devices[{index}].auth.password_env", variable))
    for field, variable in secrets:
        if variable is not None and not os.environ.get(variable):
            state = "not set" if variable not in os.environ else "set but empty"
            reason = f"the environment variable is {state}; set it in the service's environment file (/etc/valuegate/edge.env) or export it in this shell"
            issues.append(source.issue(field, reason, value=variable))


def _check_limits(source: YamlSource, check: TypeCheck, issues: list[ConfigIssue]) -> None:
    data = source.data
    metrics = check.value("$.metrics", data.get("metrics"), MetricsConfig)
    if metrics is not None and not 0 <= metrics.port <= 65535:
        issues.append(source.issue("$.metrics.port", "port is out of range", allowed="0..65535 (0 turns metrics off)"))
    spool = check.value("$.spool", data.get("spool"), SpoolConfig)
    if spool is not None and spool.max_mb <= 1:
        issues.append(source.issue("$.spool.max_mb", "the spool cap is too small", allowed="more than 1 MiB"))
    if spool is not None and not 0 < spool.alarm_ratio < 1:
        issues.append(source.issue("$.spool.alarm_ratio", "alarm ratio is out of range", allowed="between 0 and 1"))
    publish = check.value("$.publish", data.get("publish"), PublishConfig)
    for field in ("window", "telemetry_batch_records"):
        if publish is not None and getattr(publish, field) < 1:
            issues.append(source.issue(f"$.publish.{field}", "must be at least 1", allowed="a whole number of messages from 1"))


def _check_machines(source: YamlSource, check: TypeCheck, issues: list[ConfigIssue]) -> None:
    data = source.data
    zones = zoneinfo.available_timezones()
    time_zone = check.value("$.time_zone", data.get("time_zone"), str)
    if time_zone is not None and time_zone not in zones:
        issues.append(source.issue("$.time_zone", "unknown IANA time zone", allowed="a name such as Asia/Shanghai or UTC"))
    raw_devices = data.get("devices")
    # A repeated device id is reported at its own `id` by the device checks, so it counts once here.
    raw_ids = [raw.get("id") for raw in raw_devices if isinstance(raw, dict)] if isinstance(raw_devices, list) else []
    device_ids = list(dict.fromkeys(str(device_id) for device_id in raw_ids))
    machines = check.items("$.machines", data.get("machines"), MachineEntry)
    for index, entry in machines:
        where = f"$.machines[{index}]"
        if entry.device not in device_ids:
            issues.append(source.issue(f"{where}.device", "no device has this id", allowed=", ".join(device_ids) or "no devices configured"))
        if entry.time_zone is not None and entry.time_zone not in zones:
            issues.append(source.issue(f"{where}.time_zone", "unknown IANA time zone", allowed="a name such as Asia/Shanghai or UTC"))
    entries = {entry.device: entry for _, entry in machines}
    positions = {entry.device: index for index, entry in machines}
    machine_ids: dict[str, str] = {}
    for device_id in device_ids:
        entry = entries.get(device_id)
        machine_id = entry.id if entry is not None and entry.id else device_id
        where = f"$.machines[{positions[device_id]}].id" if entry is not None and entry.id else "$.machines"
        if not _ID.match(machine_id):
            issues.append(source.issue(where, f"invalid machine id for device {device_id}", value=machine_id, allowed=_ID_ALLOWED))
        if machine_id in machine_ids:
            issues.append(
                source.issue(
                    where,
                    f"devices {machine_ids[machine_id]} and {device_id} both measure machine {machine_id!r}",
                    value=machine_id,
                    allowed="one machine id per device",
                )
            )
        machine_ids[machine_id] = device_id


def load_config(path: str | Path, *, need_secrets: bool = True) -> EdgeConfig:
    """Load and validate ``edge.yaml``; raises :class:`ConfigError` listing every problem with file and line.

    A section or list item with a type error is reported and left out of the
    checks that follow, so the other sections are still checked in the same
    run. Without ``need_secrets``, a password variable missing from the
    environment is no problem, for commands that never connect.
    """
    source = load_yaml(path)
    if not isinstance(source.data, dict):
        raise ConfigError([source.issue("$", "the edge configuration must be a YAML mapping")])
    check = source.type_check(EdgeFile)
    issues: list[ConfigIssue] = list(check.issues)
    base_dir = Path(path).resolve().parent
    _check_ids(source, check, issues)
    mqtt = check.value("$.mqtt", source.data.get("mqtt"), MqttConfig)
    if mqtt is not None:
        _check_mqtt(source, mqtt, base_dir, issues)
    if need_secrets:
        _check_secrets(source, mqtt, issues)
    _check_limits(source, check, issues)
    _check_machines(source, check, issues)
    for index, name in check.items("$.contracts", source.data.get("contracts"), str):
        if not _resolve(base_dir, name).is_file():
            issues.append(source.issue(f"$.contracts[{index}]", "contract file not found", value=str(_resolve(base_dir, name))))
    if issues:
        raise ConfigError(issues)
    settings = source.convert(EdgeFile)
    return EdgeConfig(**msgspec.structs.asdict(settings), path=str(Path(path).resolve()))
