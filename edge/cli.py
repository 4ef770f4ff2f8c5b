"""Commands of valuegate.edge for the `valuegate` command line."""

from __future__ import annotations

import typer


def register(root: typer.Typer) -> None:
    """Add this layer's commands to the root command line."""
