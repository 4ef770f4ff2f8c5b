"""PostgreSQL access: the connection pool, the migration runner and the TimescaleDB policies.

Migrations are the files ``cloud/migrations/NNNN_name.sql`` applied in name
order and recorded in ``schema_migrations``. A version may instead come in two
variants, ``NNNN_name.plain.sql`` and ``NNNN_name.timescaledb.sql``; the
runner applies the one that fits the server. A file whose first line is
``-- valuegate: no-transaction`` runs statement by statement outside a
transaction (TimescaleDB continuous aggregates require it).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool

__all__ = (
    "MigrationError",
    "Migration",
    "UTC_OPTIONS",
    "list_migrations",
    "timescaledb_available",
    "uses_timescaledb",
    "migrate",
    "apply_policies",
    "open_pool",
    "refresh_machine_day",
)

log = structlog.get_logger("valuegate.cloud.db")

# Every connection pins its session time zone to UTC, so that timestamptz values
# render and truncate the same whatever the server's default is.
UTC_OPTIONS = "-c TimeZone=UTC"
_NAME = re.compile(r"^(?P<version>\d{4}_[a-z0-9_]+)(?:\.(?P<variant>plain|timescaledb))?\.sql$")
_NO_TRANSACTION = "-- valuegate: no-transaction"
# Any constant works as long as every migrating process uses the same one.
_MIGRATION_LOCK = 0x76616C7565676174


class MigrationError(RuntimeError):
    """A migration file is malformed or failed to apply; the message names the file."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file: its version (``NNNN_name``), its variant and its SQL."""

    version: str
    variant: str | None
    filename: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def transactional(self) -> bool:
        return not self.sql.lstrip().startswith(_NO_TRANSACTION)


def list_migrations(*, timescaledb: bool) -> list[Migration]:
    """Return the migrations to apply on a server with or without TimescaleDB, in name order."""
    folder = resources.files("valuegate.cloud") / "migrations"
    chosen: dict[str, Migration] = {}
    wanted = "timescaledb" if timescaledb else "plain"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        match = _NAME.match(entry.name)
        if match is None:
            msg = f"migration file {entry.name!r} must be named NNNN_name.sql or NNNN_name.plain|timescaledb.sql (lower case)"
            raise MigrationError(msg)
        version, variant = match["version"], match["variant"]
        if variant is not None and variant != wanted:
            continue
        if version in chosen and chosen[version].variant is None and variant is None:
            raise MigrationError(f"two migration files share version {version!r}")
        chosen[version] = Migration(version, variant, entry.name, entry.read_text(encoding="utf-8"))
    return [chosen[v] for v in sorted(chosen)]


def timescaledb_available(conn: psycopg.Connection[Any]) -> bool:
    """Return whether the server can load the timescaledb extension (installed and preloaded)."""
    row = conn.execute("SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
    if not row or not row[0]:
        return False
    preload = conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()
    return bool(preload and "timescaledb" in (preload[0] or ""))


def uses_timescaledb(conn: psycopg.Connection[Any]) -> bool:
    """Return whether the database was migrated with the TimescaleDB variants."""
    row = conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    return bool(row and row[0])


def _statements(sql: str) -> list[str]:
    # No-transaction files hold plain DDL without function bodies, so a
    # semicolon at the end of a line always ends a statement.
    parts = re.split(r";\s*\n", sql + "\n")
    return [p.strip() for p in parts if p.strip() and not all(line.strip().startswith("--") for line in p.strip().splitlines())]


def migrate(dsn: str, *, timescaledb: bool | None = None) -> list[str]:
    """Apply every pending migration to the database at ``dsn``; return the versions applied.

    ``timescaledb=None`` uses the extension when the server can load it.
    Safe to run from several processes at once: an advisory lock serializes them.
    """
    applied: list[str] = []
    with psycopg.connect(dsn, autocommit=True, options=UTC_OPTIONS) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, variant text, filename text NOT NULL,"
                " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0]: row[1] for row in conn.execute("SELECT version, checksum FROM schema_migrations")}
            available = timescaledb_available(conn)
            if timescaledb is None:
                timescaledb = uses_timescaledb(conn) or (available and not done)
            if timescaledb and not available:
                msg = "TimescaleDB was requested but the server cannot load the timescaledb extension; install it and add it to shared_preload_libraries, or migrate without it"
                raise MigrationError(msg)
            for migration in list_migrations(timescaledb=timescaledb):
                if migration.version in done:
                    continue
                _apply(conn, migration)
                applied.append(migration.version)
                log.info("migration_applied", version=migration.version, file=migration.filename)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied


def _apply(conn: psycopg.Connection[Any], migration: Migration) -> None:
    record = "INSERT INTO schema_migrations (version, variant, filename, checksum) VALUES (%s, %s, %s, %s)"
    params = (migration.version, migration.variant, migration.filename, migration.checksum)
    try:
        if migration.transactional:
            with conn.transaction():
                conn.execute(migration.sql.encode())
                conn.execute(record, params)
        else:
            for statement in _statements(migration.sql):
                conn.execute(statement.encode())
            conn.execute(record, params)
    except psycopg.Error as exc:
        raise MigrationError(f"migration {migration.filename} failed: {exc}") from exc


def apply_policies(dsn: str, *, compress_after_days: int, telemetry_retention_days: int | None) -> bool:
    """Set TimescaleDB compression and retention schedules from settings; return False on plain PostgreSQL.

    Vouchers are compressed but never dropped; raw telemetry is dropped only
    when ``telemetry_retention_days`` is set.
    """
    with psycopg.connect(dsn, autocommit=True, options=UTC_OPTIONS) as conn:
        if not uses_timescaledb(conn):
            return False
        after = f"{compress_after_days} days"
        for table in ("telemetry", "vouchers"):
            conn.execute("SELECT remove_compression_policy(%s, if_exists => TRUE)", (table,))
            conn.execute("SELECT add_compression_policy(%s, %s::interval)", (table, after))
        conn.execute("SELECT remove_retention_policy('telemetry', if_exists => TRUE)")
        if telemetry_retention_days is not None:
            conn.execute("SELECT add_retention_policy('telemetry', %s::interval)", (f"{telemetry_retention_days} days",))
    return True


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.set_autocommit(False)


async def open_pool(dsn: str, *, min_size: int = 1, max_size: int = 10, name: str = "valuegate") -> AsyncConnectionPool:
    """Open an async connection pool whose sessions run in UTC; close it with ``await pool.close()``."""
    pool = AsyncConnectionPool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        kwargs={"options": UTC_OPTIONS, "application_name": name},
        configure=_configure,
        open=False,
        name=name,
    )
    await pool.open(wait=True, timeout=30)
    return pool


async def refresh_machine_day(conn: psycopg.AsyncConnection[Any]) -> None:
    """Bring the machine-day view up to date on plain PostgreSQL; TimescaleDB's real-time aggregate needs nothing."""
    row = await (await conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'")).fetchone()
    if row and row[0]:
        return
    await conn.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY machine_day")
