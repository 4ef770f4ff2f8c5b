"""Commands of valuegate.adapters for the `valuegate` command line (commissioning)."""

from __future__ import annotations

import typer


def register(root: typer.Typer) -> None:
    """Add the adapter commands (probe) to the root command line."""
