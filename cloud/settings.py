"""Settings of the cloud service, read from a YAML file and ``VALUEGATE_CLOUD_*`` environment variables."""

from __future__ import annotations

import math
import os
import re
import zoneinfo
from pathlib import Path
from typing import Any

import msgspec
import yaml

from .renewal.targets import Network, parse_networks

__all__ = ("ConfigError", "CloudSettings", "load_settings", "dsn_origin", "hide_password")

ENV_PREFIX = "VALUEGATE_CLOUD_"
DSN_ENV = ENV_PREFIX + "DSN"
RENEWAL_INTERVAL_ENV = ENV_PREFIX + "RENEWAL_CHECK_INTERVAL_S"
# The name the renewal check interval had before it became a setting; still read, with a deprecation warning at start.
LEGACY_RENEWAL_INTERVAL_ENV = "VALUEGATE_RENEWAL_CHECK_INTERVAL_S"
# The maximum renewal check interval, 30 days: a trigger waits at most this long for its package.
_MAX_RENEWAL_INTERVAL_S = 30 * 86400
_INTERVAL_HINT = f"give the seconds between two renewal checks as a number up to {_MAX_RENEWAL_INTERVAL_S} (30 days), or 0 to turn the periodic check off"
_PASSWORD_PARAM = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", re.IGNORECASE)


class ConfigError(ValueError):
    """A setting is invalid; the message names the source, the field, the value and the allowed range."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class CloudSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Everything the API server and the ingest workers need; every field has a working local default."""

    dsn: str = "postgresql://valuegate@127.0.0.1:5432/valuegate"
    """PostgreSQL connection string (libpq URI or key=value form)."""
    pool_min: int = 1
    """Connections the pool keeps open."""
    pool_max: int = 10
    """Connections the pool opens at most."""
    startup_wait_s: float = 30.0
    """Seconds `cloud serve` and `cloud ingest` wait at start-up for PostgreSQL to accept connections before they give up."""

    mqtt_host: str = "127.0.0.1"
    """MQTT broker host the ingest workers subscribe on."""
    mqtt_port: int = 1883
    """MQTT broker TCP port."""
    mqtt_username: str | None = None
    """MQTT user name, when the broker requires one."""
    mqtt_password: str | None = None
    """MQTT password; never logged."""
    share_group: str = "valuegate-ingest"
    """Shared-subscription group: workers in one group split the messages between them."""
    client_id_prefix: str = "valuegate-ingest"
    """Prefix of each worker's MQTT client id: `cloud ingest` names its workers <prefix>-1, <prefix>-2 ...; give each ingest process on one broker its own prefix."""
    mqtt_session_expiry_s: int = 86_400
    """Seconds the broker keeps a stopped worker's session and queues its share of the messages; 0 ends the session at disconnect, so messages sent while no worker runs are lost."""

    clock_skew_s: float = 300.0
    """Seconds a voucher's timestamps may lie in the future of this server's clock before it is rejected."""
    ingest_batch: int = 500
    """Messages a worker verifies and stores in one database transaction at most."""
    resend_interval_s: float = 5.0
    """Seconds between two resend requests for the same gap of one gateway."""
    resend_grace_s: float = 2.0
    """Seconds a new gap may last before the first resend request; gaps from reordering between workers close within it."""
    reproduce_interval_s: float = 2.0
    """Seconds between two passes that recompute vouchers still waiting for their telemetry."""
    records_wait_s: float = 30.0
    """Seconds a stored voucher waits for the records it commits to before its gateway is asked to resend them; the request repeats at this interval."""
    baseline_wait_s: float = 21_600.0
    """Seconds a voucher whose baseline, rebuilt from stored records, differs from its claim waits for missing baseline records (asked of its gateway) before it counts as not reproduced."""
    ingest_metrics_host: str = "127.0.0.1"
    """Address the Prometheus endpoint of `cloud ingest` listens on."""
    ingest_metrics_port: int = 9465
    """TCP port of the Prometheus endpoint of `cloud ingest` (ingest and rejection counters); 0 turns it off."""

    host: str = "127.0.0.1"
    """Address the API server listens on."""
    port: int = 8000
    """TCP port the API server listens on."""
    max_body_bytes: int = 4 * 1024 * 1024
    """Largest request body the API accepts; larger bodies get 413."""
    session_max_age_s: int = 8 * 3600
    """Lifetime of a web session in seconds."""
    cookie_secure: bool = True
    """Send the session cookie over HTTPS only; turn off only for a local plain-HTTP demo."""
    display_time_zone: str = "Asia/Shanghai"
    """IANA time zone in which pages, exports and renewal packages show instants (stored times stay UTC)."""
    renewal_check_interval_s: float = 3600.0
    """Seconds between two periodic renewal checks of every contract in `cloud serve`; 0 turns the periodic check off.

    The first check runs min(60 s, this interval) after start.
    """
    webhook_allowed_networks: list[str] = []
    """CIDR networks that renewal webhooks may reach besides public addresses, such as 10.20.0.0/16 for an internal CRM.

    Loopback, link-local, private, multicast and other special-purpose addresses are rejected unless listed here.
    0.0.0.0/0 and ::/0 together turn the check off.
    """

    telemetry_retention_days: int | None = None
    """Days raw per-minute telemetry is kept on TimescaleDB; None keeps it for ever."""
    compress_after_days: int = 30
    """Days after which TimescaleDB compresses telemetry and voucher chunks."""
    use_timescaledb: bool | None = None
    """Use TimescaleDB when True, plain PostgreSQL when False, and the extension when it is installed when None."""

    def __post_init__(self) -> None:
        _check_range("pool_min", self.pool_min, 0, 1000)
        _check_range("pool_max", self.pool_max, max(1, self.pool_min), 1000)
        _check_range("startup_wait_s", self.startup_wait_s, 0, 3600)
        _check_range("mqtt_port", self.mqtt_port, 1, 65535)
        _check_range("port", self.port, 0, 65535)
        _check_range("ingest_metrics_port", self.ingest_metrics_port, 0, 65535)
        _check_range("clock_skew_s", self.clock_skew_s, 0, 86400)
        _check_range("mqtt_session_expiry_s", self.mqtt_session_expiry_s, 0, 0xFFFFFFFF)
        _check_range("baseline_wait_s", self.baseline_wait_s, 0, 365 * 86400)
        _check_range("ingest_batch", self.ingest_batch, 1, 100_000)
        _check_range("max_body_bytes", self.max_body_bytes, 1024, 1 << 30)
        _check_range("compress_after_days", self.compress_after_days, 1, 36500)
        if not math.isfinite(self.renewal_check_interval_s):
            raise ConfigError(f"setting renewal_check_interval_s = {self.renewal_check_interval_s!r} is not a finite number; {_INTERVAL_HINT}",
                              field="renewal_check_interval_s")
        if self.renewal_check_interval_s < 0:
            raise ConfigError(
                f"setting renewal_check_interval_s = {self.renewal_check_interval_s!r} is negative; "
                "give the seconds between two renewal checks, or 0 to turn the periodic check off",
                field="renewal_check_interval_s",
            )
        _check_range("renewal_check_interval_s", self.renewal_check_interval_s, 0, _MAX_RENEWAL_INTERVAL_S)
        if self.telemetry_retention_days is not None:
            _check_range("telemetry_retention_days", self.telemetry_retention_days, 1, 36500)
        if self.display_time_zone not in zoneinfo.available_timezones():
            raise ConfigError(f"display_time_zone {self.display_time_zone!r} is not an IANA time zone; use a name such as Asia/Shanghai or UTC",
                              field="display_time_zone")
        try:
            parse_networks(self.webhook_allowed_networks)
        except ValueError as exc:
            raise ConfigError(f"setting webhook_allowed_networks: {exc}", field="webhook_allowed_networks") from None
        if not self.share_group or "/" in self.share_group or "+" in self.share_group or "#" in self.share_group:
            raise ConfigError(f"share_group {self.share_group!r} must be a non-empty name without '/', '+' or '#'", field="share_group")

    @property
    def webhook_networks(self) -> tuple[Network, ...]:
        """The parsed ``webhook_allowed_networks``."""
        return parse_networks(self.webhook_allowed_networks)

    def __repr__(self) -> str:
        return f"CloudSettings(dsn={hide_password(self.dsn)!r}, mqtt={self.mqtt_host}:{self.mqtt_port}, port={self.port})"


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(f"setting {name} = {value!r} is out of range; allowed {low}..{high}", field=name)


def hide_password(dsn: str) -> str:
    """Return ``dsn`` fit for messages and logs: a password in the URI's user part or a ``password=`` parameter shows as ``***``."""
    dsn = _PASSWORD_PARAM.sub(r"\1***", dsn)
    scheme, sep, rest = dsn.partition("://")
    if not sep or "@" not in rest:
        return dsn
    credentials, _, host = rest.rpartition("@")
    user = credentials.partition(":")[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else dsn


def _from_env(environ: dict[str, str]) -> dict[str, Any]:
    fields = {name: field_type for name, field_type in CloudSettings.__annotations__.items()}
    values: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key.removeprefix(ENV_PREFIX).lower()
        if name not in fields:
            allowed = ", ".join(ENV_PREFIX + f.upper() for f in fields)
            raise ConfigError(f"environment variable {key} names no setting; known: {allowed}", field=name)
        values[name] = yaml.safe_load(raw) if raw.strip() else None
        if name == "webhook_allowed_networks":
            # A comma-separated list, because YAML cannot read an unquoted IPv6 network such as ::1/128 in a flow sequence.
            values[name] = [part.strip() for part in raw.split(",") if part.strip()]
            continue
        if name in {"dsn", "mqtt_password", "mqtt_username", "share_group", "client_id_prefix", "host", "mqtt_host", "display_time_zone"}:
            values[name] = raw
    legacy = environ.get(LEGACY_RENEWAL_INTERVAL_ENV, "")
    if legacy.strip() and "renewal_check_interval_s" not in values:
        values["renewal_check_interval_s"] = yaml.safe_load(legacy)
    return values


def dsn_origin(path: str | Path | None = None, *, environ: dict[str, str] | None = None, dsn: str | None = None) -> str | None:
    """Name where the DSN :func:`load_settings` uses comes from (``--dsn``, the environment variable or the file); None for the built-in default."""
    if dsn:
        return "--dsn"
    if (os.environ if environ is None else environ).get(DSN_ENV, "").strip():
        return DSN_ENV
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            return None
        if isinstance(loaded, dict) and loaded.get("dsn"):
            return f"dsn: in {path}"
    return None


def load_settings(path: str | Path | None = None, *, environ: dict[str, str] | None = None, **overrides: Any) -> CloudSettings:
    """Build settings from a YAML file (optional), then the environment, then ``overrides``; later sources win."""
    values: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read the settings file: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the settings file must hold a mapping, not a {type(loaded).__name__}")
        values.update(loaded)
    env = dict(os.environ if environ is None else environ)
    from_env = _from_env(env)
    values.update(from_env)
    arguments = {k: v for k, v in overrides.items() if v is not None}
    values.update(arguments)
    try:
        if "renewal_check_interval_s" in values:
            values["renewal_check_interval_s"] = _interval_seconds(values["renewal_check_interval_s"])
        return msgspec.convert(values, CloudSettings)
    except msgspec.ValidationError as exc:
        origin = _source_of(str(exc), from_env, arguments, source)
        if origin == f"environment variable {RENEWAL_INTERVAL_ENV}" and RENEWAL_INTERVAL_ENV not in env:
            origin = f"environment variable {LEGACY_RENEWAL_INTERVAL_ENV}"
        raise ConfigError(f"{origin}: {exc}") from exc


def _interval_seconds(value: Any) -> Any:
    """Read ``renewal_check_interval_s`` as a float, also from text such as ``1e3`` that YAML leaves a string.

    Raise msgspec.ValidationError naming the value and the allowed form for anything else, so that
    :func:`load_settings` adds where the value came from. Range and finiteness are checked by the settings class.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    description = "empty" if value is None or value == "" else f"{value!r}, which is not a number of seconds"
    raise msgspec.ValidationError(f"setting renewal_check_interval_s is {description}; {_INTERVAL_HINT}")


def _source_of(message: str, from_env: dict[str, Any], arguments: dict[str, Any], fallback: str) -> str:
    """Name where the setting a validation message is about came from: an argument, an environment variable, or ``fallback``."""
    found = re.search(r"at `\$\.(\w+)`", message) or re.match(r"(?:setting )?(\w+)\b", message)
    name = found.group(1) if found else None
    if name in arguments:
        return f"argument {name}"
    if name in from_env:
        return f"environment variable {ENV_PREFIX}{name.upper()}"
    return fallback
