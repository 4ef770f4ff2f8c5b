"""Edge commands: oee."""

from __future__ import annotations

import typer


def register(root: typer.Typer) -> None:
    """Add these commands to the root command line."""
