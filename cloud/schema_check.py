"""Does the database's schema match this version of valuegate? Compared from ``schema_migrations``.

``serve`` and ``ingest`` refuse to start, and ``/api/v1/ready`` returns 503,
when migrations are pending (the code would query columns that do not exist
yet) or when the database contains migrations this version does not know (a
newer version migrated it, and this one would write rows its constraints
refuse). A migration file whose text changed after it was applied is only
reported: the schema was built from the earlier text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from .db import list_migrations

__all__ = ("SchemaState", "compare", "read_state", "schema_state")

_PROBE = "SELECT to_regclass('schema_migrations') IS NOT NULL, count(*) > 0 FROM pg_extension WHERE extname = 'timescaledb'"


@dataclass(frozen=True, slots=True)
class SchemaState:
    """Versions the code has and the database lacks, versions the database has and the code lacks, files changed since applied."""

    applied: int
    pending: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    @property
    def current(self) -> bool:
        return not self.pending and not self.unknown

    def problem(self) -> str | None:
        """Return the one-line reason this code cannot run on the database, with what to do, or None."""
        if self.unknown:
            return (f"the database holds migration(s) {', '.join(self.unknown)} that this version of valuegate does not know, so a newer "
                    "version migrated it; run that version, or restore a backup taken before that migration")  # fmt: skip
        if self.pending:
            return f"{len(self.pending)} database migration(s) pending, {self.pending[0]} first; run `valuegate cloud migrate` with the same settings"
        return None

    def changed_note(self) -> str | None:
        if not self.changed:
            return None
        return (f"migration file(s) {', '.join(self.changed)} differ from the text applied to this database (its checksum was recorded then); "
                "the schema was built from the earlier text, so compare the two before relying on the change")  # fmt: skip


def compare(done: dict[str, str], *, timescaledb: bool) -> SchemaState:
    """Compare applied versions and their checksums (``done``) with the migrations of this version."""
    known = {migration.version: migration for migration in list_migrations(timescaledb=timescaledb)}
    return SchemaState(
        applied=len(done),
        pending=[version for version in known if version not in done],
        unknown=sorted(version for version in done if version not in known),
        changed=[known[version].filename for version in known if version in done and done[version] != known[version].checksum],
    )


def read_state(conn: psycopg.Connection[Any]) -> SchemaState:
    """Read the state as :func:`schema_state` does, over a synchronous connection (for ``valuegate cloud migrate``)."""
    exists, timescaledb = conn.execute(_PROBE).fetchone()  # type: ignore[misc]
    done = dict(conn.execute("SELECT version, checksum FROM schema_migrations").fetchall()) if exists else {}
    return compare(done, timescaledb=bool(timescaledb))


async def schema_state(conn: psycopg.AsyncConnection[Any]) -> SchemaState:
    """Read ``schema_migrations`` over ``conn`` and compare it with this version's migrations."""
    exists, timescaledb = await (await conn.execute(_PROBE)).fetchone()  # type: ignore[misc]
    done = dict(await (await conn.execute("SELECT version, checksum FROM schema_migrations")).fetchall()) if exists else {}
    return compare(done, timescaledb=bool(timescaledb))
