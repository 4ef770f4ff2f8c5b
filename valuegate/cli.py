"""The `valuegate` command line: one typer app that mounts each layer's commands."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="valuegate: signed evidence of delivered value.")


def main() -> None:
    app()
