"""Commands of valuegate.simulators for the `valuegate` command line."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path
from typing import Any

import typer

from valuegate.simulators.errors import url_host
from valuegate.simulators.replay import MAX_SPEED

_SOURCES_HELP = (
    "bottling (juice bottling line, Modbus or OPC UA), mazak03 / hurco02 / hurco04 (NIST machine tools, OPC UA), "
    "synthetic (seeded line with failures, micro-stops, changeovers, rejects; Modbus or OPC UA)"
)


def register(root: typer.Typer) -> None:
    """Add this layer's commands to the root command line."""
    root.command("simulate")(simulate)


def simulate(
    source: str = typer.Argument("bottling", help=f"What to serve: {_SOURCES_HELP}."),
    protocol: str = typer.Option(None, "--protocol", help="modbus or opcua (default: the source's own)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(0, "--port", help="TCP port; 0 picks a free one and prints it."),
    speed: float = typer.Option(3600.0, "--speed", help="Recorded seconds per real second (86400: a day a second)."),
    min_dwell_ms: int = typer.Option(0, "--min-dwell-ms", help="Real ms each state is served, e.g. 3 x a Modbus poll period."),
    days: int = typer.Option(None, "--days", help="Replay only the first N plant days."),
    start: str = typer.Option(None, "--start", help="First plant date to replay, YYYY-MM-DD."),
    end: str = typer.Option(None, "--end", help="Last plant date to replay, YYYY-MM-DD."),
    fault: list[str] = typer.Option(
        [], "--fault", help="Fault KIND[:key=value,...], repeatable; `at=S` starts it S real seconds in. See --list-faults."
    ),
    seed: int = typer.Option(1, "--seed", help="Seed of the synthetic line."),
    tag_map: Path = typer.Option(None, "--tag-map", help="Serve Modbus registers in this tag map's layout."),
    counter_offset: int = typer.Option(
        None, "--counter-offset", help="Value the part counter starts at (bottling; synthetic over Modbus), 0 up to the counter's width."
    ),
    unit_id: int = typer.Option(0, "--unit-id", help="Modbus unit id to answer (0: any)."),
    linger: float = typer.Option(5.0, "--linger", help="Seconds to keep serving after the replay is done."),
    wait_for_client: bool = typer.Option(
        False, "--wait-for-client",
        help="Hold the replay at its start until a client reads the registers (Modbus) or reads or subscribes to a variable (OPC UA).",
    ),
    hold_until_read: bool = typer.Option(
        False, "--hold-until-read", help="Modbus: serve each state change until a client has read it, so a poller misses none."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug events, and the warnings of asyncua and pymodbus."),
    write_tag_map: Path = typer.Option(None, "--write-tag-map", help="Write the synthetic Modbus tag map to this file and exit."),
    list_sources: bool = typer.Option(False, "--list", help="List the sources and exit."),
    list_faults: bool = typer.Option(False, "--list-faults", help="List the fault kinds and exit."),
) -> None:
    """Serve a recorded or synthetic line as a PLC over Modbus TCP or OPC UA until the replay is done.

    Fault specifications typed on standard input while it runs are applied at once.
    Invalid options, and an address or port it cannot listen on, exit with status 2.
    """
    from valuegate.simulators.faults import FAULT_HELP, FaultError, parse_fault
    from valuegate.simulators.scenarios import SOURCES, SimulatorOptions, protocols_of

    if list_sources:
        for name, protocols in SOURCES.items():
            typer.echo(f"{name}: {', '.join(protocols)}")
        raise typer.Exit
    if list_faults:
        typer.echo(FAULT_HELP)
        raise typer.Exit
    if write_tag_map is not None:
        from valuegate.simulators.layouts import SYNTHETIC_FILLER_MAP

        write_tag_map.write_text(SYNTHETIC_FILLER_MAP, encoding="utf-8")
        typer.echo(f"wrote the synthetic filler tag map to {write_tag_map}")
        raise typer.Exit

    try:
        protocols = protocols_of(source)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="SOURCE") from None
    if protocol is not None and protocol not in protocols:
        raise typer.BadParameter(f"{source} is served over {' or '.join(protocols)}, not {protocol!r}", param_hint="--protocol")
    chosen = protocol or protocols[0]
    if tag_map is not None and not tag_map.is_absolute() and not tag_map.is_file():
        # A path in the shipped maps folder, such as generic/filler-modbus.yaml, as an edge configuration names it.
        from valuegate.adapters.tagmap import shipped_tag_map_dir

        shipped = shipped_tag_map_dir() / tag_map
        tag_map = shipped if shipped.is_file() else tag_map
    checks = [
        (
            math.isfinite(speed) and 0 < speed <= MAX_SPEED,
            "--speed",
            f"{speed} must be positive recorded seconds per real second, at most {MAX_SPEED:.0e} (about 30 recorded years a second)",
        ),
        (min_dwell_ms >= 0, "--min-dwell-ms", f"{min_dwell_ms} must be 0 or more"),
        (days is None or days >= 1, "--days", f"{days} must be 1 or more"),
        (0 <= port <= 65535, "--port", f"{port} is not a TCP port (0-65535)"),
        (0 <= unit_id <= 255, "--unit-id", f"{unit_id} is not a Modbus unit id (0-255)"),
        (linger >= 0, "--linger", f"{linger} must be 0 or more seconds"),
        (tag_map is None or chosen == "modbus", "--tag-map", "a tag map sets a Modbus layout; drop it for OPC UA"),
        (tag_map is None or tag_map.is_file(), "--tag-map", f"{tag_map} does not exist"),
        (counter_offset is None or counter_offset >= 0, "--counter-offset", f"{counter_offset} is negative; the part counter starts at 0 or more"),
        (
            counter_offset is None or source == "bottling" or (source == "synthetic" and chosen == "modbus"),
            "--counter-offset",
            f"{source} over {chosen} has no part counter offset; use it with bottling, or synthetic over Modbus",
        ),
        (not hold_until_read or chosen == "modbus", "--hold-until-read", "works over Modbus only; an OPC UA subscriber queues every change"),
    ]
    for valid, hint, message in checks:
        if not valid:
            raise typer.BadParameter(message, param_hint=hint)
    try:
        faults = [parse_fault(text, protocol=chosen) for text in fault]
    except FaultError as exc:
        raise typer.BadParameter(str(exc), param_hint="--fault") from None
    options = SimulatorOptions(
        host=host, port=port, speed=speed, min_dwell_ms=min_dwell_ms, days=days,
        start=_date(start, "--start"), end=_date(end, "--end"), counter_offset=counter_offset, unit_id=unit_id,
        tag_map=tag_map, seed=seed, faults=faults, wait_for_client=wait_for_client, hold_until_read=hold_until_read,
    )

    import asyncio

    from valuegate.simulators.errors import ListenError
    from valuegate.simulators.scenarios import build_simulator

    # Before the simulator binds its loggers: a logger bound earlier keeps structlog's default, which prints to stdout.
    _configure_logging(verbose=verbose)
    try:
        simulator = build_simulator(source, chosen, options)
    except ValueError as exc:
        # An empty slice of the recording, a counter offset the counter cannot show, an invalid tag map.
        raise typer.BadParameter(str(exc)) from None
    try:
        asyncio.run(_serve(simulator, source, chosen, linger, min_dwell_ms))
    except (KeyboardInterrupt, asyncio.CancelledError):
        typer.echo("stopped")
    except ListenError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except (ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _configure_logging(*, verbose: bool) -> None:
    """Log the simulator's lifecycle events to stderr (debug events too when ``verbose``) and silence asyncua and pymodbus.

    asyncua logs a failed listen with a traceback before the simulator
    reports it in one line. With ``verbose`` the libraries' warnings reach
    stderr through the standard library's last-resort handler.
    """
    import logging
    import sys

    import structlog

    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG if verbose else logging.INFO),
        # Look sys.stderr up at each event, so that a replaced stream (a test runner's) is never written after it closed.
        logger_factory=lambda *_: structlog.PrintLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )
    for name in ("asyncua", "pymodbus"):
        logging.getLogger(name).setLevel(logging.WARNING if verbose else logging.CRITICAL + 1)


def _date(text: str | None, hint: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a date; write YYYY-MM-DD", param_hint=hint) from None


async def _serve(simulator: Any, source: str, protocol: str, linger: float, min_dwell_ms: int) -> None:
    import asyncio
    import signal
    import sys
    import threading

    from valuegate.simulators.faults import FaultError, parse_fault

    loop = asyncio.get_running_loop()
    # SIGTERM (systemctl stop, kill, a test harness) stops the simulator as Ctrl-C does: servers closed, stop logged.
    loop.add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)  # type: ignore[union-attr]

    async def apply(line: str) -> None:
        try:
            await simulator.inject(parse_fault(line, protocol=protocol))
            typer.echo(f"fault applied: {line}")
        except (FaultError, ValueError, OSError) as exc:
            typer.echo(f"fault not applied: {exc}", err=True)

    def read_commands() -> None:
        for raw in sys.stdin:
            line = raw.strip()
            if line:
                asyncio.run_coroutine_threadsafe(apply(line), loop)

    async with simulator:
        if protocol == "modbus":
            typer.echo(f"serving {source} over Modbus TCP on {url_host(simulator.host)}:{simulator.port}")  # type: ignore[attr-defined]
            typer.echo("done flag: coil 0")
        else:
            typer.echo(f"serving {source} over OPC UA at {simulator.endpoint}")  # type: ignore[attr-defined]
            typer.echo("namespace urn:valuegate:simulator:mtconnect; done flag: Machine/ReplayDone")
        estimate = simulator.clock.real_duration_estimate_s()
        held = " at least, as each change waits for a client read" if simulator.clock.pacing.hold_until_read else ""
        typer.echo(f"replay takes about {estimate:.0f} s{held}; type a fault spec and Enter to inject it, Ctrl-C to stop")
        if not held and not min_dwell_ms:
            # Reads and dwells can stretch a replay past the estimate, so a late fault may then still come in time.
            for message in _late_faults(simulator.faults, estimate, linger):
                typer.echo(message, err=True)
        threading.Thread(target=read_commands, name="fault-commands", daemon=True).start()
        if not simulator.started:
            what = "reads the holding registers" if protocol == "modbus" else "reads or subscribes to a Machine/ variable"
            typer.echo(f"waiting for a client that {what}; the replay starts then")
            await simulator.wait_started()
            typer.echo("client connected; replay started")
        await simulator.finished.wait()
        typer.echo(f"replay done; serving the final state for {linger:g} s more")
        await asyncio.sleep(linger)
        for spec in simulator.unapplied_faults():
            typer.echo(f"fault not applied: {spec.text} was scheduled at {spec.at_s or 0:g} s, after the command stopped", err=True)


def _late_faults(faults: list[Any], estimate_s: float, linger_s: float) -> list[str]:
    """Return a warning for each scheduled fault that starts after the estimated replay and the linger are over."""
    return [
        f"warning: fault {spec.text} is scheduled at {spec.at_s:g} s, but the replay takes about {estimate_s:.1f} s and the command "
        f"exits {linger_s:g} s after it (--linger), so the fault will not be applied; lower at= or raise --linger"
        for spec in faults
        if spec.at_s is not None and spec.at_s >= estimate_s + linger_s
    ]
