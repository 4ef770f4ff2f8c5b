"""The `valuegate demo` command."""

from __future__ import annotations

import typer


def register(root: typer.Typer) -> None:
    """Add this command to the root command line."""
