"""Commands of valuegate.adapters for the `valuegate` command line (commissioning)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def register(root: typer.Typer) -> None:
    """Add the adapter commands (probe) to the root command line."""
    root.command("probe")(probe)


def probe(
    config: Path = typer.Argument(..., help="Edge configuration file (YAML) whose `devices:` list is probed."),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON list of objects instead of a table."),
    device: list[str] = typer.Option([], "--device", "-d", help="Probe only this device id (repeatable)."),
) -> None:
    """Connect to every device of CONFIG, read every tag once and print what was read.

    Exits with status 1 when any tag could not be read (its reason is
    printed), and 2 when the configuration or a tag map is invalid.
    """
    import asyncio
    import logging

    from .errors import ConfigError

    logging.basicConfig(level=logging.ERROR)
    # Each tag's row already names its failure; the libraries' own lines (pymodbus dumps whole frames) would only repeat it.
    for library in ("asyncua", "pymodbus"):
        logging.getLogger(library).setLevel(logging.CRITICAL)
    _quiet_structlog()
    try:
        hints: list[str] = []
        single: set[tuple[str, str]] = set()
        rows = asyncio.run(_probe(config, set(device), hints, single))
    except ConfigError as exc:
        typer.echo(f"invalid configuration:\n{exc}", err=True)
        raise typer.Exit(2) from exc
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc

    if json_output:
        import msgspec

        typer.echo(msgspec.json.encode(rows).decode())
    else:
        _print_table(rows, single)
    failed = [row for row in rows if row["status"] == "bad"]
    for hint in hints:
        typer.echo(hint, err=True)
    if failed:
        if not json_output:
            typer.echo(f"{len(failed)} of {len(rows)} tags failed", err=True)
        raise typer.Exit(1)


def _quiet_structlog() -> None:
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))


def _unit_hint(device_config: Any, rows: list[dict[str, Any]]) -> str | None:
    """Return a hint to check the unit id when every tag of a Modbus device failed with the same such exception."""
    from .modbus_plan import UNIT_ID_EXCEPTIONS, unit_id_hint

    details = {row["detail"] for row in rows}
    if device_config.protocol != "modbus" or not rows or len(details) != 1 or any(row["status"] != "bad" for row in rows):
        return None
    (detail,) = details
    if detail not in UNIT_ID_EXCEPTIONS:
        return None
    return f"{device_config.id}: all {len(rows)} tags failed with {detail}: {unit_id_hint(device_config.unit_id)}"


async def _probe(config: Path, only: set[str], hints: list[str], single: set[tuple[str, str]]) -> list[dict[str, Any]]:
    """Read every tag of the selected devices once; add a hint per device to ``hints`` and its float32 tags to ``single``."""
    import asyncio

    import time

    from .devices import load_devices, open_device
    from .opcua_session import OpcUaSetupError
    from .samples import Sample
    from .tagmap import load_tag_map

    devices = load_devices(config)
    unknown = only - {d.id for d in devices}
    if unknown:
        raise ValueError(f"no device {', '.join(sorted(unknown))} in {config}; devices: {', '.join(d.id for d in devices)}")

    async def read(device_config: Any) -> list[dict[str, Any]]:
        tag_map = load_tag_map(device_config.tag_map)
        units = {tag["name"]: tag.get("unit", "") for tag in tag_map.tags}
        places = {tag["name"]: _place(tag) for tag in tag_map.tags}
        single.update((device_config.id, tag["name"]) for tag in tag_map.tags if tag.get("type") == "float32")
        try:
            async with open_device(device_config, tag_map) as client:
                samples = await client.read_all()
                reason = getattr(client, "last_error", "")
        except OpcUaSetupError as exc:
            # A setting the server refuses (no such endpoint, no password) fails this device's tags, not the whole probe.
            now_ms = time.time_ns() // 1_000_000
            samples = [Sample(device_config.id, str(tag["name"]), now_ms, "gateway", now_ms, None, None, "bad", "disconnected") for tag in tag_map.tags]
            reason = str(exc)
        rows = []
        for sample in samples:
            detail = sample.detail
            if sample.detail == "disconnected" and reason:
                detail = f"disconnected: {reason}"
            rows.append({
                "device": sample.device,
                "tag": sample.tag,
                "raw": sample.raw,
                "value": sample.value,
                "unit": units.get(sample.tag, ""),
                "where": places.get(sample.tag, ""),
                "status": sample.status,
                "detail": detail,
                "timestamp": _iso(sample.ts_ms),
                "time_source": sample.time_source,
            })
        hint = _unit_hint(device_config, rows)
        if hint is not None:
            hints.append(hint)
        return rows

    selected = [d for d in devices if not only or d.id in only]
    results = await asyncio.gather(*(read(d) for d in selected))
    return [row for rows in results for row in rows]


def _place(tag: dict[str, Any]) -> str:
    """Return where the tag map reads a tag: a Modbus table and address, an OPC UA node id or browse path."""
    if "table" in tag:
        return f"{tag['table']} {tag.get('address')}"
    if tag.get("node"):
        return str(tag["node"])
    return "/".join(str(part) for part in tag.get("browse_path") or [])


def _iso(ts_ms: int) -> str:
    import datetime

    moment = datetime.datetime.fromtimestamp(ts_ms / 1000, tz=datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _print_table(rows: list[dict[str, Any]], single: set[tuple[str, str]]) -> None:
    """Print the rows as a table; values of the (device, tag) pairs in ``single`` show float32 precision."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="valuegate probe")
    for column in ("device", "tag", "where", "raw", "value", "unit", "status", "timestamp"):
        table.add_column(column, overflow="fold")
    styles = {"good": "green", "uncertain": "yellow", "bad": "red"}
    # A lost connection fails every tag of a device with one long reason. The table marks each tag, and the reason follows once.
    reasons: dict[str, str] = {}
    for row in rows:
        detail = row["detail"]
        if detail.startswith("disconnected: "):
            reasons.setdefault(row["device"], detail.removeprefix("disconnected: "))
            detail = "disconnected, see below"
        status = row["status"] + (f": {detail}" if detail else "")
        table.add_row(
            row["device"], row["tag"], row["where"], _shown(row["raw"]), _shown(row["value"], single=(row["device"], row["tag"]) in single), row["unit"],
            f"[{styles[row['status']]}]{status}[/]", row["timestamp"],
        )
    console = Console(width=max(160, Console().width))
    console.print(table)
    for device, reason in reasons.items():
        console.print(f"{device}: disconnected: {reason}", markup=False, highlight=False)


def _shown(value: Any, *, single: bool = False) -> str:
    """Format a raw or engineering value for the table; ``single`` shows a float with the digits a float32 carries."""
    if value is None:
        return ""
    if single and isinstance(value, float):
        import numpy as np

        # numpy prints the shortest text that reads back as the same float32: -1.11, not -1.1100000143051147.
        return str(np.float32(value))
    if isinstance(value, list) and all(isinstance(item, int) for item in value):
        return " ".join(f"{item:04X}" for item in value)
    return str(value)
