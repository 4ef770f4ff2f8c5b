"""PostgreSQL access: the connection pool, the migration runner and the TimescaleDB policies.

Migrations are the files ``cloud/migrations/NNNN_name.sql`` applied in name
order and recorded in ``schema_migrations``. A version may instead come in two
variants, ``NNNN_name.plain.sql`` and ``NNNN_name.timescaledb.sql``; the
runner applies the one that fits the server. A file whose first line is
``-- valuegate: no-transaction`` runs statement by statement outside a
transaction (TimescaleDB continuous aggregates require it).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
import weakref
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .settings import hide_password

__all__ = (
    "DatabaseUnavailable",
    "OutageLog",
    "is_connection_error",
    "wait_for_database",
    "watch_pool",
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


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL cannot be reached or refused the connection; the message names the DSN (password hidden), why, and what to check."""

    def __init__(self, dsn: str, reason: str, *, hint: str = "check that the server is running and that the DSN is right") -> None:
        self.dsn = dsn
        self.reason = reason
        self.hint = hint
        super().__init__(f"cannot connect to PostgreSQL at {hide_password(dsn)}: {reason}; {hint}")

    @classmethod
    def from_error(cls, dsn: str, exc: BaseException) -> DatabaseUnavailable:
        if isinstance(exc, psycopg.ProgrammingError):
            return cls(dsn, _reason(exc), hint="write the DSN as postgresql://user@host:port/database or as key=value pairs")
        return cls(dsn, _reason(exc))

    def with_hint(self, hint: str) -> DatabaseUnavailable:
        """Return the same failure with another hint (the command line names where the DSN came from)."""
        return DatabaseUnavailable(self.dsn, self.reason, hint=hint)


def _reason(exc: BaseException) -> str:
    # libpq's messages span lines ("connection failed: ... \n\tIs the server running ..."); the first line names the cause.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0].removeprefix("connection failed: ") if lines else type(exc).__name__


def is_connection_error(exc: BaseException) -> bool:
    """Return whether ``exc`` means the database is out of reach (refused, lost, shutting down), not that a statement failed."""
    if isinstance(exc, PoolTimeout | psycopg.InterfaceError):
        return True
    if isinstance(exc, psycopg.OperationalError):
        # Class 08 is "connection exception"; 57P01-57P03 are shutdowns and "cannot connect now"; libpq's own errors carry no SQLSTATE.
        state = exc.sqlstate
        return state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03")
    return False


def _connect(dsn: str) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(dsn, autocommit=True, options=UTC_OPTIONS)
    except psycopg.Error as exc:
        raise DatabaseUnavailable.from_error(dsn, exc) from None


async def wait_for_database(dsn: str, *, wait_s: float, name: str = "valuegate") -> None:
    """Return once PostgreSQL at ``dsn`` accepts a connection; retry with backoff for ``wait_s`` seconds, then raise :class:`DatabaseUnavailable`."""
    deadline = time.monotonic() + wait_s
    delay = 0.5
    waiting_logged = False
    while True:
        try:
            conn = await psycopg.AsyncConnection.connect(dsn, options=UTC_OPTIONS, application_name=name, connect_timeout=max(2, min(10, round(wait_s))))
        except psycopg.Error as exc:
            remaining = deadline - time.monotonic()
            if not isinstance(exc, psycopg.OperationalError) or remaining <= 0:
                raise DatabaseUnavailable.from_error(dsn, exc) from None
            if not waiting_logged:
                log.warning("database_waiting", dsn=hide_password(dsn), error=_reason(exc), wait_s=wait_s)
                waiting_logged = True
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 5.0)
        else:
            await conn.close()
            if waiting_logged:
                log.info("database_reached", dsn=hide_password(dsn))
            return


class OutageLog:
    """Logs a database outage as one WARNING when it starts, a reminder every ``remind_s`` while it lasts and one INFO when it ends.

    ``failed(exc)`` notes an error and returns whether it was a connection problem;
    ``recovered()`` is called after the next success. The pool's own
    per-attempt warnings are folded into the same events (see :func:`open_pool`).
    """

    def __init__(self, dsn: str, *, component: str, remind_s: float = 600.0) -> None:
        self.dsn = hide_password(dsn)
        self.component = component
        self.remind_s = remind_s
        self._since: float | None = None
        self._reminded = 0.0

    @property
    def active(self) -> bool:
        return self._since is not None

    def failed(self, exc: BaseException) -> bool:
        """Note ``exc``; return True when it is a connection problem (which this log reports), False for any other error."""
        if not is_connection_error(exc):
            return False
        self.note(_reason(exc))
        return True

    def note(self, reason: str) -> None:
        now = time.monotonic()
        if self._since is None:
            self._since = self._reminded = now
            log.warning(
                "database_unavailable", dsn=self.dsn, error=reason, component=self.component,
                action="retrying with backoff until PostgreSQL is back; this is logged once per outage",
            )  # fmt: skip
        elif now - self._reminded >= self.remind_s:
            self._reminded = now
            log.warning("database_still_unavailable", dsn=self.dsn, error=reason, component=self.component, down_s=round(now - self._since))

    def recovered(self) -> None:
        if self._since is not None:
            log.info("database_available_again", dsn=self.dsn, component=self.component, down_s=round(time.monotonic() - self._since, 1))
            self._since = None


# Pools whose connection-failure warnings an OutageLog reports instead of psycopg_pool, by pool name.
_QUIET_POOLS: weakref.WeakValueDictionary[str, OutageLog] = weakref.WeakValueDictionary()
_POOL_CONNECT_FAILED = "error connecting in %r: %s"
_POOL_GAVE_UP = "reconnection attempt in pool %r failed after %s sec"
_POOL_DISCARDED = ("discarding broken connection: %s", "discarding closed connection: %s")


class _PoolWarnings(logging.Filter):
    """Hand psycopg_pool's per-attempt connection warnings of watched pools to their OutageLog, which logs an outage once."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if record.msg in (_POOL_CONNECT_FAILED, _POOL_GAVE_UP) and args and args[0] in _QUIET_POOLS:
            if record.msg == _POOL_CONNECT_FAILED and len(args) > 1:
                _QUIET_POOLS[args[0]].note(_reason(args[1]))
            return False
        if record.msg in _POOL_DISCARDED and len(_QUIET_POOLS):
            # The message names no pool. The failed statement that broke the connection reaches an OutageLog anyway.
            log.debug("pool_connection_discarded", connection=str(args[0]) if args else None)
            return False
        return True


_POOL_FILTER = _PoolWarnings()


def watch_pool(pool: AsyncConnectionPool, *, component: str) -> OutageLog:
    """Return the outage log of ``pool``, shared by everything that uses the pool.

    It reports the pool's connection failures in place of psycopg_pool's warning per attempt.
    """
    outage = _QUIET_POOLS.get(pool.name)
    if outage is None:
        outage = OutageLog(pool.conninfo, component=component)
        _QUIET_POOLS[pool.name] = outage
    logger = logging.getLogger("psycopg.pool")
    if _POOL_FILTER not in logger.filters:
        logger.addFilter(_POOL_FILTER)
    return outage


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
    with _connect(dsn) as conn:
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
            from .schema_check import compare

            state = compare(done, timescaledb=timescaledb)
            if state.unknown:
                # A newer version migrated this database: applying this version's files around its migrations could break both.
                raise MigrationError(state.problem() or "")
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
    with _connect(dsn) as conn:
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


async def open_pool(dsn: str, *, min_size: int = 1, max_size: int = 10, name: str = "valuegate", wait_s: float = 30.0) -> AsyncConnectionPool:
    """Open an async connection pool whose sessions run in UTC; close it with ``await pool.close()``.

    Waits up to ``wait_s`` seconds for the server, then raises :class:`DatabaseUnavailable`.
    """
    await wait_for_database(dsn, wait_s=wait_s, name=name)
    pool = AsyncConnectionPool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        kwargs={"options": UTC_OPTIONS, "application_name": name},
        configure=_configure,
        # A connection the server closed meanwhile (a restart, a failover) is replaced before a request gets it, not after
        # the request failed with a 500.
        check=AsyncConnectionPool.check_connection,
        open=False,
        name=name,
    )
    timeout = max(wait_s, 5.0)
    try:
        await pool.open(wait=True, timeout=timeout)
    except PoolTimeout:
        raise DatabaseUnavailable(dsn, f"the connection pool did not open within {timeout:g} s") from None
    return pool


async def refresh_machine_day(conn: psycopg.AsyncConnection[Any]) -> None:
    """Refresh ``machine_day`` where it is still a materialized view, as on plain PostgreSQL before migration 0009.

    Does nothing on a current schema: there, triggers on ``telemetry`` keep the
    plain-PostgreSQL table current, and TimescaleDB's real-time aggregate needs nothing.
    """
    row = await (await conn.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass('machine_day')")).fetchone()
    if row is not None and row[0] == "m":
        await conn.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY machine_day")
