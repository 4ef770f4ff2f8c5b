"""Bring a fresh database to the schema just before one migration, to test what that migration does to stored rows."""

from __future__ import annotations

import psycopg

from valuegate.cloud import db
from valuegate.cloud.db import UTC_OPTIONS


def migrate_before(dsn: str, version: str) -> None:
    """Apply, as `valuegate cloud migrate` would, every plain-PostgreSQL migration whose version sorts before ``version``."""
    with psycopg.connect(dsn, autocommit=True, options=UTC_OPTIONS) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (version text PRIMARY KEY, variant text, filename text NOT NULL,"
            " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for migration in db.list_migrations(timescaledb=False):
            if migration.version < version:
                db._apply(conn, migration)
