"""The `valuegate demo` command: replay recorded plant data through the whole chain and print the value report."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer


def _parse_broker(value: str | None) -> tuple[str, int] | None:
    if value is None:
        return None
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise typer.BadParameter(f"{value!r} is not HOST:PORT, for example 127.0.0.1:1883")
    return host, int(port)


async def _run(options: Any, *, serve: bool, language: str, as_json: bool, out_dir: Path, show: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    from .render import report_html
    from .report import collect_report
    from .settle import settle_and_package
    from .stack import running_stack

    async with running_stack(options) as stack:
        options.progress("running the invoices and renewal triggers")
        extras = await settle_and_package(stack, out_dir)
        report = await asyncio.to_thread(collect_report, stack, extras=extras)
        paths = {}
        for lang in ("zh-CN", "en"):
            path = out_dir / f"report.{lang}.html"
            path.write_text(report_html(report, lang), encoding="utf-8")
            paths[lang] = str(path)
        report["report_html"] = paths
        (out_dir / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
        show(report)  # before serving, so the report is on screen while the web UI runs
        if serve:
            console_out = sys.stderr if as_json else sys.stdout
            print(f"web UI: {stack.api_url}/login?lang={language}", file=console_out)
            for username, password in stack.passwords.items():
                print(f"  log in as {username} / {password}", file=console_out)
            # `valuegate cloud admin --dsn ...` reaches the demo's database with this while it runs.
            print(f"database: {_masked(stack.dsn)}", file=console_out)
            print("press Ctrl-C to stop", file=console_out)
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                pass
        return report


def _masked(dsn: str) -> str:
    """Return the connection string with any password replaced, for printing."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    parts = conninfo_to_dict(dsn)
    if "password" not in parts:
        return dsn
    return make_conninfo(**{**parts, "password": "***"})


def _check_out_dir(out: Path) -> None:
    """Reject an output folder that is a file or holds an earlier demo run, whose files would look current."""
    if out.exists() and not out.is_dir():
        raise typer.BadParameter(f"{out} is a file; give a folder for the demo's output", param_hint="--out")
    leftovers = [name for name in ("edge", "report.json") if (out / name).exists()]
    if leftovers:
        msg = f"{out} already holds an earlier demo run ({', '.join(leftovers)}); give a new or empty folder, or remove it first"
        raise typer.BadParameter(msg, param_hint="--out")


def _run_until_signal(coroutine: Any) -> Any:
    """Run ``coroutine``; SIGTERM cancels it like Ctrl-C does, so the demo's servers are stopped either way."""

    async def main() -> Any:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return await coroutine
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    return asyncio.run(main())


def demo(
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON instead of tables."),
    language: str = typer.Option("zh-CN", "--lang", help="Language of the printed report and the web UI link: zh-CN or en."),
    out: Path | None = typer.Option(None, "--out", help="Folder for the report, invoices, packages and the edge state (a new temporary folder when omitted)."),
    bottling_days: int | None = typer.Option(None, "--bottling-days", min=1, help="Replay only the first N production days of the bottling line."),
    mazak_days: int | None = typer.Option(None, "--mazak-days", min=1, help="Replay only the first N plant days of the Mazak recording."),
    speed: float = typer.Option(200_000.0, "--speed", min=1.0, help="Recorded seconds replayed per real second between state changes."),
    broker: str | None = typer.Option(None, "--broker", help="HOST:PORT of an MQTT broker to use instead of starting Mosquitto."),
    database: str | None = typer.Option(None, "--database", help="PostgreSQL connection string to use instead of a throwaway cluster."),
    serve: bool = typer.Option(False, "--serve", help="Keep the web UI running after the report until Ctrl-C."),
    verbose: bool = typer.Option(False, "--verbose", help="Show the components' log events."),
) -> None:
    """Replay recorded plant data through simulators, an edge agent and the cloud; print a verified value report."""
    from rich.console import Console

    from .logs import configure_demo_logging
    from .render import print_report
    from .stack import DemoOptions

    if language not in ("zh-CN", "en"):
        raise typer.BadParameter(f"language {language!r} is not available; use zh-CN or en", param_hint="--lang")
    configure_demo_logging(verbose=verbose)
    if out is not None:
        _check_out_dir(out)
    out_dir = out or Path(tempfile.mkdtemp(prefix="valuegate-demo-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    err = Console(stderr=True)
    options = DemoOptions(
        state_dir=out_dir,
        bottling_days=bottling_days,
        mazak_days=mazak_days,
        speed=speed,
        broker=_parse_broker(broker),
        database=database,
        progress=lambda message: err.print(f"[dim]demo:[/dim] {message}"),
    )
    def show(report: dict[str, Any]) -> None:
        if as_json:
            typer.echo(json.dumps(report, ensure_ascii=False, indent=2, default=str))
        else:
            print_report(report, Console(), language)

    try:
        _run_until_signal(_run(options, serve=serve, language=language, as_json=as_json, out_dir=out_dir, show=show))
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise typer.Exit(130) from None
    except Exception as exc:
        message = _known_failure(exc)
        if message is None:
            raise
        err.print(f"[red]error:[/red] {message}")
        raise typer.Exit(1) from None


def _known_failure(exc: BaseException) -> str | None:
    """Return a one-line message for failures a user can fix (a server that is down, a used database), else None."""
    from valuegate.cloud.ingest import IngestError
    from valuegate.services import ServiceError

    from .stack import DemoError

    if isinstance(exc, (DemoError, ServiceError, IngestError)):
        return str(exc)
    try:
        import psycopg
    except ImportError:  # pragma: no cover - the demo needs the cloud extra anyway
        return None
    if isinstance(exc, psycopg.OperationalError):
        return f"cannot use the PostgreSQL database: {str(exc).strip().splitlines()[0]}; check --database or leave it out to use a throwaway cluster"
    return None


def register(root: typer.Typer) -> None:
    """Add the demo command to the root command line."""
    root.command("demo")(demo)
