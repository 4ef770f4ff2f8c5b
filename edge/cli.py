"""Commands of valuegate.edge for the `valuegate` command line."""

from __future__ import annotations

import typer


def register(root: typer.Typer) -> None:
    """Add the edge commands (edge run/check-config, keys, oee) to the root command line."""
    from . import cli_agent, cli_keys, cli_oee

    cli_agent.register(root)
    cli_keys.register(root)
    cli_oee.register(root)
