"""The spool's tables, and the upgrade of a spool that an earlier agent wrote.

Vouchers stay in ``vouchers`` from issue until the telemetry retention has
passed after their acknowledgement. The outbox is the part of that table
above the acknowledged sequence (``meta.acked_through``). An
acknowledgement therefore writes one row to ``acks`` and moves that number,
without copying or deleting signed payloads while the publisher waits.
Retention deletes acknowledged vouchers in bulk later, by the time of the
ack that covered them.
"""

from __future__ import annotations

import sqlite3

__all__ = ("SCHEMA_VERSION", "ACKED_THROUGH", "create_or_upgrade")

SCHEMA_VERSION = 2

# The acknowledged sequence as an SQL expression: the outbox is ``vouchers`` above it.
ACKED_THROUGH = "(SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'acked_through')"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    machine TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    kind INTEGER NOT NULL,            -- 0 state change, 1 counter reading
    code INTEGER,
    reason TEXT,
    uncertain INTEGER NOT NULL DEFAULT 0,
    tag TEXT,
    value REAL,
    summarized INTEGER NOT NULL DEFAULT 0  -- 1 once minute records cover it
);
CREATE INDEX IF NOT EXISTS events_by_machine ON events (machine, summarized, ts_ms, id);
CREATE INDEX IF NOT EXISTS events_by_age ON events (summarized, ts_ms);
CREATE TABLE IF NOT EXISTS machines (
    machine TEXT PRIMARY KEY,
    watermark_ms INTEGER NOT NULL DEFAULT 0,
    minutes_done_ms INTEGER,          -- every minute that starts before this is summarized
    carry TEXT,                       -- state and counters in force at minutes_done_ms (JSON)
    missed_transitions INTEGER NOT NULL DEFAULT 0,
    day_done TEXT                     -- last closed plant date
);
CREATE TABLE IF NOT EXISTS minutes (
    machine TEXT NOT NULL,
    minute_ms INTEGER NOT NULL,
    record TEXT NOT NULL,             -- the MinuteRecord as JSON
    published INTEGER NOT NULL DEFAULT 0,
    published_ms INTEGER,
    covered INTEGER NOT NULL DEFAULT 0,   -- an acknowledged voucher commits to it
    PRIMARY KEY (machine, minute_ms)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS minutes_unpublished ON minutes (published, minute_ms);
CREATE TABLE IF NOT EXISTS days (
    machine TEXT NOT NULL,
    plant_date TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (machine, plant_date)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS anchor_days (
    contract TEXT NOT NULL,
    anchor TEXT NOT NULL,
    plant_date TEXT NOT NULL,
    role TEXT NOT NULL,               -- baseline or reporting
    result TEXT NOT NULL,
    seq INTEGER,                      -- the voucher issued for a reporting day
    PRIMARY KEY (contract, anchor, plant_date)
) WITHOUT ROWID;
-- Every voucher from issue until the retention has passed after its ack: the sequence, the signed
-- payload (set to NULL under disk pressure once acknowledged), the scope of its evidence and its issue time.
-- The cloud can ask again for the records a voucher commits to, and for the voucher itself after its
-- database was restored from an older backup.
CREATE TABLE IF NOT EXISTS vouchers (
    seq INTEGER PRIMARY KEY,
    payload BLOB,
    machines TEXT NOT NULL,           -- JSON list of the scope's machine ids
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
);
-- One row per applied cloud ack: every voucher up to ``through`` was acknowledged at ``acked_ms`` or earlier.
CREATE TABLE IF NOT EXISTS acks (
    through INTEGER PRIMARY KEY,
    acked_ms INTEGER NOT NULL
);
"""

_META_DEFAULTS = {"schema_version": str(SCHEMA_VERSION), "next_seq": "1", "head_hash": "", "acked_through": "0"}


def create_or_upgrade(db: sqlite3.Connection) -> tuple[int, int]:
    """Create missing tables and meta rows, upgrade a version 1 spool inside the caller's transaction, and return the versions before and after."""
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    for key, value in _META_DEFAULTS.items():
        db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value))
    found = int(db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])
    if found == 1:
        _upgrade_from_1(db)
        return found, SCHEMA_VERSION
    return found, found


def _upgrade_from_1(db: sqlite3.Connection) -> None:
    """Move a version 1 spool's ``outbox`` and ``acked_spans`` into ``vouchers`` and ``acks``.

    Version 1 deleted a voucher from ``outbox`` when the cloud acknowledged it
    and kept its scope, ack time and (from a later release on) its payload in
    ``acked_spans``. An acknowledged voucher's issue time was not kept, so
    its ack time is used instead.
    """
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "acked_spans" in tables:
        columns = {row[1] for row in db.execute("PRAGMA table_info(acked_spans)")}
        payload = "payload" if "payload" in columns else "NULL"
        db.execute(
            f"INSERT OR IGNORE INTO vouchers (seq, payload, machines, start_ms, end_ms, created_ms) "
            f"SELECT seq, {payload}, machines, start_ms, end_ms, acked_ms FROM acked_spans"
        )
        db.execute("INSERT OR IGNORE INTO acks (through, acked_ms) SELECT max(seq), acked_ms FROM acked_spans GROUP BY acked_ms")
        db.execute("DROP TABLE acked_spans")
    if "outbox" in tables:
        db.execute(
            "INSERT OR REPLACE INTO vouchers (seq, payload, machines, start_ms, end_ms, created_ms) "
            "SELECT seq, payload, machines, start_ms, end_ms, created_ms FROM outbox"
        )
        db.execute("DROP TABLE outbox")
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
