"""`valuegate edge check-config`: every problem of edge.yaml with its devices, tag maps and contracts, and the warnings."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from valuegate.adapters.errors import ConfigError
from valuegate.adapters.tagmap import TagMap, load_tag_map
from valuegate.adapters.yamlsource import load_yaml

from .config import EdgeConfig, load_config

__all__ = ("ConfigWarning", "check_config", "config_warnings", "measures_anchor")

# Tag-map needs of an oee_points anchor, for every machine in its scope. Availability and the unplanned
# downtime rate come from the state model alone, but OEE also needs effectiveness and quality.
_OEE_NEEDS = "ideal_cycle_time_s in the tag map and a counter of kind produced or good"


@dataclass(frozen=True, slots=True)
class ConfigWarning:
    """Something the configuration allows but probably does not intend; it does not stop the agent."""

    event: str
    """structlog event name the agent logs at start."""
    device: str | None
    tag_map: str | None
    """Tag map file the warning is about; None for a warning about edge.yaml itself."""
    text: str
    """The warning with file, line, field and the fix, as check-config prints it."""


def check_config(path: str | Path, notes: list[str] | None = None) -> list[str]:
    """Validate the configuration, its devices, every tag map and every contract it names; return each problem as a line.

    ``notes`` receives a line for each anchor that another gateway must measure, because none of its machines is on this one.
    """
    from valuegate.adapters.devices import load_devices

    problems: list[str] = []
    try:
        config = load_config(path)
    except ConfigError as exc:
        problems.extend(str(issue) for issue in exc.issues)
        config = None
    try:
        load_devices(path)
    except ConfigError as exc:
        problems.extend(str(issue) for issue in exc.issues)
    # Both loaders read edge.yaml, so a syntax error in it would be reported twice.
    problems = list(dict.fromkeys(problems))
    if config is None or problems:
        return problems
    _check_contracts(config, problems, notes if notes is not None else [])
    return problems


def measures_anchor(scope: Iterable[str], machine_ids: Collection[str]) -> bool:
    """Return whether a gateway with ``machine_ids`` measures an anchor, which it does only when it has every machine of the scope.

    The agent's pipeline chooses its anchors with this rule, so check-config accepts what the agent measures or skips.
    """
    return all(machine in machine_ids for machine in scope)


def _check_contracts(config: EdgeConfig, problems: list[str], notes: list[str]) -> None:
    from valuegate.edge.protocol.contract import ContractError, load_contract
    from valuegate.edge.protocol.contract_source import source_from_text

    machines = {machine.id: machine for machine in config.machine_list()}
    for name in config.contracts:
        file = config.resolve(name)
        try:
            contract = load_contract(file)
        except ContractError as exc:
            problems.append(str(exc))
            continue
        source = source_from_text(file.read_text(encoding="utf-8"), str(file))
        if contract.tenant != config.tenant:
            message = f"the contract is for another tenant than the {config.tenant!r} this gateway serves"
            problems.append(str(source.error("$.tenant", message, allowed=f"{config.tenant} (the tenant in edge.yaml)")))
        for index, anchor in enumerate(contract.anchors):
            where = f"$.anchors[{index}].scope"
            if not any(machine in machines for machine in anchor.scope):
                # A contract may span gateways: each gateway measures the anchors whose machines it has, the cloud all of them.
                line = source.line_of(where)
                location = f"{file}:{line}" if line else str(file)
                notes.append(
                    f"{location}: contract {contract.id}, anchor {anchor.id}: this gateway has none of its machines "
                    f"({', '.join(anchor.scope)}), so it skips the anchor; another gateway must measure it"
                )
                continue
            if not measures_anchor(anchor.scope, machines):
                unknown = [machine for machine in anchor.scope if machine not in machines]
                known = ", ".join(sorted(machines)) or "none"
                allowed = (
                    f"{known} (one gateway measures an anchor only when it has every machine of the scope, so the agent would skip it; "
                    "move those machines to one gateway, or split the anchor into one anchor per gateway)"
                )
                problems.append(str(source.error(where, "no device of this gateway measures these machines of the scope", value=", ".join(unknown), allowed=allowed)))
                continue
            zones = {machines[machine].time_zone for machine in anchor.scope}
            if len(zones) > 1:
                problems.append(str(source.error(where, f"the machines' plant days run in different time zones {sorted(zones)}; one anchor needs one time zone")))
            if anchor.metric != "oee_points":
                continue
            for machine_id in anchor.scope:
                missing = _oee_gaps(load_tag_map(machines[machine_id].device.tag_map))
                if not missing:
                    continue
                tag_map_file = machines[machine_id].device.tag_map
                message = (
                    f"contract {contract.id}, anchor {anchor.id}: OEE is undefined for machine {machine_id}, because its tag map "
                    f"{tag_map_file} has no {' and no '.join(missing)}, so no voucher could ever be issued"
                )
                allowed = f"{_OEE_NEEDS}; or metric availability_points or unplanned_downtime_rate"
                problems.append(str(source.error(f"$.anchors[{index}].metric", message, allowed=allowed)))


def _oee_gaps(tag_map: TagMap) -> list[str]:
    """Return what a tag map lacks for a defined OEE: effectiveness needs the ideal cycle time, quality a count."""
    missing = []
    if tag_map.ideal_cycle_time_s is None:
        missing.append("ideal_cycle_time_s")
    if not any(counter.kind in ("produced", "good") for counter in tag_map.counters):
        missing.append("counter of kind produced or good")
    return missing


# The port that IANA registers for MQTT over TLS (secure-mqtt).
_MQTT_TLS_PORT = 8883


def config_warnings(config: EdgeConfig) -> list[ConfigWarning]:
    """Return the warnings of a valid configuration.

    They name tag maps on PLC time without a PLC clock, node ids with an
    unlisted namespace URI, tag map settings that are most often mistakes
    (see :func:`valuegate.adapters.tagmap_checks.mistake_warnings`),
    metrics served beyond loopback and MQTT without TLS on the TLS port.
    """
    import ipaddress

    from valuegate.adapters.tagmap_checks import mistake_warnings, namespace_warnings, tag_map_warnings

    warnings: list[ConfigWarning] = []
    source = load_yaml(config.path)
    metrics_host = config.metrics.host
    try:
        loopback = metrics_host == "localhost" or ipaddress.ip_address(metrics_host).is_loopback
    except ValueError:
        loopback = False
    if config.metrics.port and not loopback:
        issue = source.issue("$.metrics.host", "health and metrics are served beyond this machine and carry no authentication", allowed="127.0.0.1 or ::1")
        warnings.append(ConfigWarning("metrics_not_loopback", None, None, str(issue)))
    if config.mqtt.port == _MQTT_TLS_PORT and config.mqtt.tls is None:
        issue = source.issue("$.mqtt.port", f"port {_MQTT_TLS_PORT} is the MQTT over TLS port, but mqtt.tls is not set; add a tls section or use port 1883")
        warnings.append(ConfigWarning("mqtt_tls_port_without_tls", None, None, str(issue)))
    for machine in config.machine_list():
        device = machine.device
        for issue in tag_map_warnings(device.tag_map):
            warnings.append(ConfigWarning("plc_clock_missing", device.id, device.tag_map, f"{issue} (device {device.id})"))
        for issue in namespace_warnings(device.tag_map):
            warnings.append(ConfigWarning("opcua_namespace_unlisted", device.id, device.tag_map, f"{issue} (device {device.id})"))
        for issue in mistake_warnings(device.tag_map):
            warnings.append(ConfigWarning("tag_map_likely_mistake", device.id, device.tag_map, f"{issue} (device {device.id})"))
    return warnings
