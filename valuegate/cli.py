"""The `valuegate` command line: one typer app to which each layer adds its commands.

Each layer's ``cli`` module imports only typer and rich at module level and
loads its heavy dependencies inside the commands, so that an edge box
without the cloud extra still starts every edge command.
"""

from __future__ import annotations

import typer

from valuegate import __version__

app = typer.Typer(
    no_args_is_help=True,
    help="valuegate: signed evidence of the value delivered to a plant.",
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    """Print the version, the code's folder and, with the cloud installed, the latest database migration it brings."""
    if value:
        from pathlib import Path

        import valuegate.edge

        parts = [f"code in {Path(valuegate.edge.__file__).resolve().parent.parent}"]
        try:
            from valuegate.cloud.db import list_migrations
        except ImportError:  # an edge box installs no cloud
            pass
        else:
            parts.insert(0, f"schema {list_migrations(timescaledb=False)[-1].version}")
        typer.echo(f"valuegate {__version__} ({'; '.join(parts)})")
        raise typer.Exit


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """valuegate: signed evidence of the value delivered to a plant."""


def _register_layers() -> None:
    from valuegate import recording_trace, verify_cli
    from valuegate.demo import cli as demo_cli
    from valuegate.adapters import cli as adapters_cli
    from valuegate.cloud import cli as cloud_cli
    from valuegate.edge import cli as edge_cli
    from valuegate.simulators import cli as simulators_cli

    adapters_cli.register(app)
    edge_cli.register(app)
    recording_trace.register()
    simulators_cli.register(app)
    cloud_cli.register(app)
    verify_cli.register(app)
    demo_cli.register(app)


_register_layers()


def main() -> None:
    app()
