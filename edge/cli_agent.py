"""Edge commands: `valuegate edge run` (the agent) and `valuegate edge check-config`."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import typer

edge_app = typer.Typer(no_args_is_help=True, help="Run the edge agent or check its configuration.")


# Libraries that log through the standard library. Below --log-level debug only their critical lines are kept, because
# their errors repeat at every retry with kilobytes of frames or a traceback and name no device. The adapters log each
# loss and failed retry themselves, with device, cause and retry delay.
_LIBRARY_LOGGERS = ("asyncua", "pymodbus")


def _stderr_is_journal() -> bool:
    """Return whether stderr is the stream systemd connected to journald, which it names in JOURNAL_STREAM as device:inode."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        info = os.fstat(2)
    except OSError:
        return False
    return (info.st_dev, info.st_ino) == (int(device), int(inode))


def _journal_prefixed(formatter):  # noqa: ANN001, ANN202 - a logging.Formatter in and out, logging imported lazily
    """Wrap ``formatter`` so that each line starts with its syslog priority, such as <4> for a warning.

    journald reads that prefix (the unit's SyslogLevelPrefix, on by default) and files the line at that priority,
    so that ``journalctl -p warning`` finds the agent's warnings and errors.
    """
    import logging

    priorities = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}

    class JournalFormatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return f"<{priorities.get(record.levelno, 6)}>{formatter.format(record)}"

    return JournalFormatter()


# asyncua's debug lines print whole requests; an ActivateSession over a channel that does not encrypt the user token
# itself shows the OPC UA password as Password=b'...'.
_PASSWORD_FIELD = re.compile(r"""(Password=b?)(['"])(?:\\.|(?!\2).)*\2""")


def _redact_passwords(_logger: object, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """Replace every ``Password=...`` value in a library's log line with ``***``."""
    text = event.get("event")
    if isinstance(text, str) and "Password=" in text:
        event["event"] = _PASSWORD_FIELD.sub(r"\1\2***\2", text)
    return event


def _configure_logging(level: str) -> None:
    """Log JSON lines to stderr (journald keeps them, each at its priority), one event per line.

    Records of the standard library's ``logging`` (asyncua and pymodbus use
    it) go through the same JSON renderer as the agent's own events, so
    every line of the agent's stderr is one JSON object. A multi-line
    message stays inside its JSON string.
    """
    import logging
    import sys

    import structlog

    threshold = getattr(logging, level.upper())
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, _redact_passwords],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(default=repr),
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_journal_prefixed(formatter) if _stderr_is_journal() else formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(threshold)
    for name in _LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(threshold if threshold <= logging.DEBUG else logging.CRITICAL)
    logging.captureWarnings(True)


def _config_file(argument: Path | None, option: Path | None) -> Path:
    """Return the edge.yaml given either way, as ``edge.yaml`` or ``--config edge.yaml``, so both commands take both forms."""
    if argument is not None and option is not None and argument != option:
        raise typer.BadParameter(f"two files given, {argument} and --config {option}; give one edge.yaml", param_hint="--config")
    chosen = argument or option
    if chosen is None:
        raise typer.BadParameter("give the agent's edge.yaml, as an argument or with --config", param_hint="--config")
    return chosen


@edge_app.command("run")
def run(
    config_argument: Path | None = typer.Argument(None, metavar="EDGE.YAML", help="The agent's edge.yaml (or give it with --config)."),
    config_option: Path | None = typer.Option(None, "--config", "-c", help="The agent's edge.yaml."),
    log_level: str = typer.Option(
        "info", "--log-level",
        help="Lowest level logged: debug, info, warning or error. asyncua's and pymodbus's own lines below critical show only at debug.",
    ),
) -> None:
    """Run the edge agent until SIGTERM or SIGINT; it drains and stops within 10 seconds."""
    from valuegate.adapters.errors import ConfigError
    from valuegate.edge.config import load_config

    config_path = _config_file(config_argument, config_option)
    if log_level.lower() not in ("debug", "info", "warning", "error"):
        raise typer.BadParameter(f"{log_level!r} is not a log level; use debug, info, warning or error", param_hint="--log-level")
    _configure_logging(log_level)
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    # The spool and the numba cache hold plant data: only the agent's user may read them, as the service's UMask=0077 ensures.
    os.umask(0o077)
    # numba reads its cache folder when it is first imported, so set it before the kernels load.
    os.environ.setdefault("NUMBA_CACHE_DIR", str(config.state_path / "numba-cache"))

    import asyncio

    exit_code = asyncio.run(_run(config))
    raise typer.Exit(exit_code)


async def _run(config) -> int:  # noqa: ANN001 - EdgeConfig, imported lazily
    import asyncio
    import signal

    import structlog

    from valuegate.edge.agent import EdgeAgent
    from valuegate.edge.keys import KeyFileError
    from valuegate.edge.spool import SpoolError

    log = structlog.get_logger("valuegate.edge.cli")
    _log_config_warnings(config, log)
    try:
        agent = EdgeAgent(config)
        # Handlers go in before start-up, so that a stop during the first kernel compilation is logged and honoured.
        loop = asyncio.get_running_loop()
        for number in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(number, agent.stop)
        async with agent:
            await agent.run()
    except (KeyFileError, SpoolError, OSError) as exc:
        log.error("agent_failed", error=str(exc))
        return 1
    except Exception:  # noqa: BLE001 - logged as one JSON line with its traceback, then systemd restarts the agent
        log.exception("agent_failed")
        return 1
    return 0


def _log_config_warnings(config, log) -> None:  # noqa: ANN001 - EdgeConfig and a structlog logger, imported lazily
    """Log each warning of ``config`` once; an invalid device list is left for the agent to report."""
    from valuegate.adapters.errors import ConfigError
    from valuegate.edge.config_checks import config_warnings

    try:
        warnings = config_warnings(config)
    except ConfigError:
        return
    for warning in warnings:
        log.warning(warning.event, device=warning.device, tag_map=warning.tag_map, detail=warning.text)


@edge_app.command("check-config")
def check_config(
    config_argument: Path | None = typer.Argument(None, metavar="EDGE.YAML", help="The edge.yaml to check (or give it with --config)."),
    config_option: Path | None = typer.Option(None, "--config", "-c", help="The edge.yaml to check."),
) -> None:
    """Check edge.yaml, its devices, every tag map and every contract; print each problem with file, field, value and allowed values.

    Exits with status 1 when there is a problem. WARNING lines name what the
    agent accepts but probably should not; they leave the status at 0.
    """
    from valuegate.edge.config import load_config
    from valuegate.edge.config_checks import check_config as check
    from valuegate.edge.config_checks import config_warnings

    from valuegate.edge.keys import KeyFileError, check_key_file

    config_path = _config_file(config_argument, config_option)
    notes: list[str] = []
    problems = check(config_path, notes)
    if not problems:
        config = load_config(config_path)
        # The service runs this check before each start, so a key the agent would refuse stops it here.
        try:
            if not check_key_file(config.state_path / "keys"):
                notes.append(f"no signing key in {config.state_path / 'keys'} yet; create it with `valuegate keys new --config {config_path}` before starting the agent")
        except KeyFileError as exc:
            problems.append(str(exc))
    for problem in problems:
        typer.echo(problem, err=True)
    if problems:
        typer.echo(f"{len(problems)} problem(s) found in {config_path} and the files it names", err=True)
        raise typer.Exit(1)
    for note in notes:
        typer.echo(f"note: {note}", err=True)
    warnings = [warning.text for warning in config_warnings(config)]
    for warning in warnings:
        typer.echo(f"WARNING: {warning}", err=True)
    shown = f" with {len(warnings)} warning(s)" if warnings else ""
    typer.echo(f"{config_path}: OK{shown}")


def register(root: typer.Typer) -> None:
    """Add the `edge` command group to the root command line."""
    root.add_typer(edge_app, name="edge")
