"""Shared set-up of the cloud benchmarks: the machine line they print and a fresh, migrated database."""

from __future__ import annotations

import os
import platform
import uuid

import psycopg

from valuegate.cloud import db
from valuegate.services import PostgresServer

__all__ = ("machine_line", "fresh_database")


def machine_line() -> str:
    """Return the line that names the machine a benchmark ran on."""
    return f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def fresh_database(pg: PostgresServer) -> tuple[str, str]:
    """Create a database with a random name on ``pg``, migrate it, and return its DSN and the server's version."""
    dsn = pg.dsn.rsplit("/", 1)[0] + "/bench_" + uuid.uuid4().hex[:6]
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dsn.rsplit("/", 1)[1]}"')
        row = conn.execute("SHOW server_version").fetchone()
    db.migrate(dsn)
    return dsn, row[0] if row else "?"
