"""Commands of valuegate.cloud for the `valuegate` command line: serve, ingest, migrate and admin."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, NoReturn

import typer

cloud_app = typer.Typer(no_args_is_help=True, help="Cloud service: REST API, MQTT ingest, database migrations, administration.")

ConfigOption = typer.Option(None, "--config", "-c", help="Settings YAML file; VALUEGATE_CLOUD_* environment variables override it.")
DsnOption = typer.Option(None, "--dsn", help="PostgreSQL connection string; overrides the settings.")


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except ModuleNotFoundError:
        return True


@cloud_app.callback()
def _require_cloud_extra() -> None:
    """Cloud service: REST API, MQTT ingest, database migrations, administration."""
    missing = [module for module in ("litestar", "psycopg", "uvicorn") if _missing(module)]
    if missing:
        typer.echo(
            f"error: `valuegate cloud` needs the cloud extra, but {', '.join(missing)} is not installed; "
            "install it with: pip install 'valuegate[cloud]'",
            err=True,
        )
        raise typer.Exit(2)


def register(root: typer.Typer) -> None:
    """Add the cloud commands, the admin group among them, to the root command line."""
    from .cli_admin import admin_app

    cloud_app.add_typer(admin_app, name="admin")
    root.add_typer(cloud_app, name="cloud")


def settings_or_exit(config: Path | None, **overrides: Any) -> Any:
    from .settings import ConfigError, load_settings

    try:
        return load_settings(config, **overrides)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def explained(exc: Any, config: Path | None, dsn: str | None) -> Any:
    """Return ``exc`` with a hint that names where the DSN came from, or states that none was given and how to set one."""
    from .settings import DSN_ENV, dsn_origin

    origin = dsn_origin(config, dsn=dsn)
    if origin is None:
        return exc.with_hint(f"no DSN was given, so the default was used; set one with --dsn, the {DSN_ENV} environment variable or dsn: in a settings file (--config)")
    return exc.with_hint(f"{exc.hint} (the DSN comes from {origin})")


def _database_failed(exc: Any, config: Path | None, dsn: str | None) -> NoReturn:
    typer.echo(f"error: {explained(exc, config, dsn)}", err=True)
    raise typer.Exit(1)


def run_sync(coro: Any) -> Any:
    import asyncio

    import psycopg

    from .db import DatabaseUnavailable
    from .store import StoreError

    try:
        return asyncio.run(coro)
    except (StoreError, DatabaseUnavailable) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except psycopg.OperationalError as exc:
        # The connection opened, then failed (the server stopped or restarted). Each admin call is one transaction, so nothing is half-written.
        typer.echo(f"error: the database connection failed during the command: {' '.join(str(exc).split())}; run it again once PostgreSQL is back", err=True)
        raise typer.Exit(1) from None


@cloud_app.command()
def migrate(
    config: Path | None = ConfigOption,
    dsn: str | None = DsnOption,
    timescaledb: bool | None = typer.Option(None, "--timescaledb/--plain", help="Force the TimescaleDB or the plain-PostgreSQL schema; default: TimescaleDB when the server has it."),
) -> None:
    """Apply pending database migrations, then the TimescaleDB compression and retention policies."""
    from .db import DatabaseUnavailable, MigrationError, apply_policies
    from .db import migrate as run_migrations

    settings = settings_or_exit(config, dsn=dsn)
    try:
        applied = run_migrations(settings.dsn, timescaledb=timescaledb if timescaledb is not None else settings.use_timescaledb)
        policies = apply_policies(settings.dsn, compress_after_days=settings.compress_after_days, telemetry_retention_days=settings.telemetry_retention_days)
    except MigrationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except DatabaseUnavailable as exc:
        _database_failed(exc, config, dsn)
    typer.echo(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")
    typer.echo("TimescaleDB policies set" if policies else "plain PostgreSQL: no TimescaleDB policies")
    if note := _schema_note(settings.dsn):
        typer.echo(f"warning: {note}", err=True)


def _schema_note(dsn: str) -> str | None:
    import psycopg

    from .db import UTC_OPTIONS
    from .schema_check import read_state

    with psycopg.connect(dsn, options=UTC_OPTIONS) as conn:
        return read_state(conn).changed_note()


async def _check_schema(dsn: str) -> str | None:
    """Return why this version cannot run on the database at ``dsn`` (migrations pending or unknown), or None."""
    import psycopg

    from .db import UTC_OPTIONS
    from .schema_check import schema_state

    async with await psycopg.AsyncConnection.connect(dsn, options=UTC_OPTIONS) as conn:
        return (await schema_state(conn)).problem()


LogLevelOption = typer.Option("info", "--log-level", help="Lowest level logged: debug, info, warning or error.")


def _configure_logging(level: str) -> None:
    """Log one JSON object per line to stderr from ``level`` up (info by default: debug lines are per batch)."""
    import logging
    import sys

    import structlog

    threshold = getattr(logging, level.upper(), None)
    if not isinstance(threshold, int):
        raise typer.BadParameter(f"{level!r} is not a log level; use debug, info, warning or error", param_hint="--log-level")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(default=repr),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


@cloud_app.command()
def serve(
    config: Path | None = ConfigOption,
    dsn: str | None = DsnOption,
    host: str | None = typer.Option(None, help="Address to listen on."),
    port: int | None = typer.Option(None, help="TCP port to listen on."),
    log_level: str = LogLevelOption,
) -> None:
    """Serve the REST API and the web UI with uvicorn; wait up to startup_wait_s for PostgreSQL first."""
    import asyncio

    import uvicorn

    from .app import create_app
    from .db import DatabaseUnavailable, wait_for_database

    _configure_logging(log_level)
    settings = settings_or_exit(config, dsn=dsn, host=host, port=port)
    try:
        asyncio.run(wait_for_database(settings.dsn, wait_s=settings.startup_wait_s, name="valuegate-api"))
        problem = asyncio.run(_check_schema(settings.dsn))
    except DatabaseUnavailable as exc:
        _database_failed(exc, config, dsn)
    if problem:
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(1)
    shown_host = f"[{settings.host}]" if ":" in settings.host else settings.host
    app = create_app(settings, listen_url=f"http://{shown_host}:{settings.port}")
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False)


@cloud_app.command()
def ingest(
    config: Path | None = ConfigOption,
    dsn: str | None = DsnOption,
    workers: int = typer.Option(1, min=1, max=64, help="Ingest workers in this process; each holds its own share of the MQTT subscription."),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", min=0, max=65535, help="Port of the Prometheus endpoint (default: the ingest_metrics_port setting, 9465); 0 turns it off."
    ),
    log_level: str = LogLevelOption,
) -> None:
    """Verify and store vouchers and telemetry from MQTT until interrupted; serve the ingest counters to Prometheus."""
    import asyncio
    import contextlib

    from .db import DatabaseUnavailable, open_pool
    from .ingest import IngestError, IngestWorker
    from .ingest_sessions import retire_sessions, worker_name
    from .metrics import serve_exposition

    _configure_logging(log_level)
    settings = settings_or_exit(config, dsn=dsn, **({} if metrics_port is None else {"ingest_metrics_port": metrics_port}))

    async def main() -> None:
        # SIGTERM (systemd, docker stop) stops the workers as Ctrl-C does, so each logs ingest_stopped.
        import signal

        stopping = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
        # Each worker holds one connection for the lock on its client id and uses up to one more.
        pool = await open_pool(settings.dsn, min_size=1, max_size=2 * workers + 2, name="valuegate-ingest", wait_s=settings.startup_wait_s)
        try:
            if problem := await _check_schema(settings.dsn):
                raise IngestError(problem)
            async with contextlib.AsyncExitStack() as stack:
                if settings.ingest_metrics_port:
                    host, port = settings.ingest_metrics_host, settings.ingest_metrics_port
                    try:
                        stack.callback(serve_exposition(host, port))
                    except OSError as exc:
                        msg = f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}); set ingest_metrics_port (or --metrics-port) to a free port, or 0 to turn metrics off"
                        raise IngestError(msg) from exc
                    typer.echo(f"Prometheus metrics at http://{host}:{port}/metrics")
                for number in range(1, workers + 1):
                    await stack.enter_async_context(IngestWorker(settings, pool=pool, name=worker_name(settings, number)))
                if retired := await retire_sessions(settings, pool, first=workers + 1):
                    typer.echo(f"retired {retired} broker session(s) of workers an earlier `cloud ingest --workers` left; their queued messages are stored")
                typer.echo(f"{workers} ingest worker(s) running on {settings.mqtt_host}:{settings.mqtt_port}; press Ctrl-C to stop")
                await stopping.wait()
        finally:
            await pool.close()

    try:
        asyncio.run(main())
    except IngestError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except DatabaseUnavailable as exc:
        _database_failed(exc, config, dsn)
    except KeyboardInterrupt:
        pass
    typer.echo("stopped")
