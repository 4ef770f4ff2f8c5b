"""Edge commands: `valuegate edge run` (the agent) and `valuegate edge check-config`."""

from __future__ import annotations

import os
from pathlib import Path

import typer

edge_app = typer.Typer(no_args_is_help=True, help="Run the edge agent or check its configuration.")


def _configure_logging(level: str) -> None:
    """Log JSON lines to stderr (journald keeps them), one event per line."""
    import logging

    import structlog

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=__import__("sys").stderr),
        cache_logger_on_first_use=True,
    )


@edge_app.command("run")
def run(
    config_path: Path = typer.Option(..., "--config", "-c", help="The agent's edge.yaml."),
    log_level: str = typer.Option("info", "--log-level", help="Lowest level logged: debug, info, warning or error."),
) -> None:
    """Run the edge agent until SIGTERM or SIGINT; it drains and stops within 10 seconds."""
    from valuegate.adapters.errors import ConfigError
    from valuegate.edge.config import load_config

    _configure_logging(log_level)
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
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
    try:
        async with EdgeAgent(config) as agent:
            loop = asyncio.get_running_loop()
            for number in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(number, agent.stop)
            await agent.run()
    except (KeyFileError, SpoolError, OSError) as exc:
        log.error("agent_failed", error=str(exc))
        return 1
    return 0


@edge_app.command("check-config")
def check_config(config_path: Path = typer.Argument(..., help="The edge.yaml to check.")) -> None:
    """Check edge.yaml, its devices, every tag map and every contract; print each problem with file, field, value and allowed values."""
    from valuegate.edge.config import check_config as check

    problems = check(config_path)
    for problem in problems:
        typer.echo(problem, err=True)
    if problems:
        typer.echo(f"{len(problems)} problem(s) found in {config_path}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{config_path}: OK")


def register(root: typer.Typer) -> None:
    """Add the `edge` command group to the root command line."""
    root.add_typer(edge_app, name="edge")
