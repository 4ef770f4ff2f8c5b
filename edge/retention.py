"""Bounded disk use of the spool: routine retention and pruning under the configured cap.

Raw events that minute records already summarize go first, oldest first,
then published records that an acknowledged voucher covers, the payloads
of acknowledged vouchers, published records of a contract's baseline
period, acknowledged vouchers themselves, and last raw events not yet
summarized (logged as lost data by the caller). Unacknowledged vouchers and
telemetry records that neither an acknowledgement nor a baseline period
covers are never pruned.

The cap counts every file of the spool: the database, its WAL and the WAL
index (``-shm``). Part of the cap is set aside for the WAL and its index
(:func:`wal_limit`), and rows are pruned only while the pages they use exceed
the rest. A WAL larger than its share, which a checkpoint held up by the
other connection leaves, therefore never causes rows to be deleted, because
deleting rows only adds to the WAL until a checkpoint succeeds.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .config import SpoolConfig
from .metrics import AgentMetrics, LogLimiter
from .spool import WAL_LIMIT_BYTES, Spool, SpoolThread
from .spool_schema import ACKED_THROUGH

__all__ = ("used_bytes", "data_bytes", "wal_limit", "rows_limit", "prune", "housekeep")

# Share of the cap set aside for the WAL, up to WAL_LIMIT_BYTES.
_WAL_SHARE = 8
# Size of the WAL index (-shm) while the WAL has at most about 4000 frames: SQLite grows it in 32 KiB blocks.
_WAL_INDEX_BYTES = 32 * 1024

# Pruning stages under cap pressure, in order: kind and statement, deleting oldest first, 2000 rows per commit.
_PRUNE_STAGES = (
    ("summarized_events", "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE summarized = 1 ORDER BY ts_ms LIMIT 2000)"),
    (
        "minutes",
        "DELETE FROM minutes WHERE (machine, minute_ms) IN "
        "(SELECT machine, minute_ms FROM minutes WHERE published = 1 AND covered = 1 ORDER BY minute_ms LIMIT 2000)",
    ),
    # Payloads of acknowledged vouchers, kept for a cloud restored from a backup, before raw samples not yet summarized.
    (
        "acked_payloads",
        "UPDATE vouchers SET payload = NULL WHERE seq IN "
        f"(SELECT seq FROM vouchers WHERE payload IS NOT NULL AND seq <= {ACKED_THROUGH} ORDER BY seq LIMIT 2000)",
    ),
    # Published records of a baseline period: the cloud stored them and requests them again only when its rebuilt baseline differs.
    (
        "baseline_minutes",
        "DELETE FROM minutes WHERE (machine, minute_ms) IN (SELECT m.machine, m.minute_ms FROM minutes m JOIN keep_spans k "
        "ON k.machine = m.machine AND k.start_ms <= m.minute_ms AND k.end_ms > m.minute_ms WHERE m.published = 1 ORDER BY m.minute_ms LIMIT 2000)",
    ),
    # Acknowledged vouchers whose payloads went already: the cloud stored them, and a request for their records then logs evidence_unavailable.
    ("acked_vouchers", f"DELETE FROM vouchers WHERE seq IN (SELECT seq FROM vouchers WHERE seq <= {ACKED_THROUGH} ORDER BY seq LIMIT 2000)"),
    ("unsummarized_events", "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE summarized = 0 ORDER BY ts_ms LIMIT 2000)"),
)


def wal_limit(cap_bytes: int) -> int:
    """Return the part of the spool cap set aside for the WAL file: an eighth of the cap, at most 4 MiB."""
    return min(WAL_LIMIT_BYTES, cap_bytes // _WAL_SHARE)


def rows_limit(cap_bytes: int) -> int:
    """Return the bytes of database pages that :func:`prune` keeps the rows under: the cap less the WAL and its index."""
    return cap_bytes - wal_limit(cap_bytes) - _WAL_INDEX_BYTES


def used_bytes(spool: Spool) -> int:
    """Return the bytes the spool's files take on disk: the database, the WAL and the WAL index."""
    total = 0
    for path in (spool.path, Path(f"{spool.path}-wal"), Path(f"{spool.path}-shm")):
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            pass  # no WAL or index while no connection has the database open in WAL mode
    return total


def data_bytes(spool: Spool) -> int:
    """Return the bytes of the database pages in use, which is what the database file shrinks to once checkpointed and vacuumed."""
    page_size = spool.db.execute("PRAGMA page_size").fetchone()[0]
    pages = spool.db.execute("PRAGMA page_count").fetchone()[0]
    free = spool.db.execute("PRAGMA freelist_count").fetchone()[0]
    return (pages - free) * page_size


def prune(spool: Spool, cap_bytes: int, *, now_ms: int, retention_ms: int, keep: Iterable[tuple[str, int, int]] = ()) -> dict[str, int]:
    """Delete what may go until the spool's pages fit ``cap_bytes`` less the WAL's share; return the rows deleted per kind.

    Routine: summarized raw events, and published telemetry records older
    than the retention once their plant day is closed, with the scopes of
    vouchers acknowledged before it. Under cap pressure, in this order,
    oldest first: the remaining summarized raw events, published records
    that an acknowledged voucher covers, payloads of acknowledged vouchers,
    published records inside a ``keep`` span, acknowledged vouchers, then
    raw events not yet summarized (lost data, which the caller logs).
    Unacknowledged vouchers, and telemetry records that neither an
    acknowledgement nor a ``keep`` span covers, are never deleted.

    Records inside a ``keep`` span ``(machine, start_ms, end_ms)``, the
    baseline periods of the contracts, outlast the retention. The cloud
    rebuilds each baseline from them and may ask for them long after, so
    only cap pressure deletes them.
    """
    deleted = {kind: 0 for kind, _ in _PRUNE_STAGES}
    horizon = now_ms - retention_ms
    with spool.transaction(sync="NORMAL"):
        spool.db.execute("CREATE TEMP TABLE IF NOT EXISTS keep_spans (machine TEXT NOT NULL, start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL)")
        spool.db.execute("DELETE FROM keep_spans")
        spool.db.executemany("INSERT INTO keep_spans (machine, start_ms, end_ms) VALUES (?, ?, ?)", list(keep))
        deleted["summarized_events"] += spool.db.execute("DELETE FROM events WHERE summarized = 1 AND ts_ms < ?", (horizon,)).rowcount
        deleted["minutes"] += spool.db.execute(
            "DELETE FROM minutes WHERE published = 1 AND published_ms < ? "
            "AND EXISTS (SELECT 1 FROM days d WHERE d.machine = minutes.machine AND d.start_ms <= minutes.minute_ms "
            "AND d.end_ms > minutes.minute_ms) "
            "AND NOT EXISTS (SELECT 1 FROM keep_spans k WHERE k.machine = minutes.machine AND k.start_ms <= minutes.minute_ms "
            "AND k.end_ms > minutes.minute_ms)",
            (horizon,),
        ).rowcount
        expired = spool.db.execute("SELECT max(through) FROM acks WHERE acked_ms < ?", (horizon,)).fetchone()[0]
        if expired is not None:
            spool.db.execute("DELETE FROM vouchers WHERE seq <= ?", (expired,))
            spool.db.execute("DELETE FROM acks WHERE through <= ?", (expired,))
    _reclaim(spool)

    rows_cap = rows_limit(cap_bytes)
    for kind, statement in _PRUNE_STAGES:
        while data_bytes(spool) > rows_cap:
            with spool.transaction(sync="NORMAL"):
                count = spool.db.execute(statement).rowcount
            _reclaim(spool)
            if count == 0:
                break
            deleted[kind] += count
    return deleted


def _reclaim(spool: Spool) -> None:
    # A TRUNCATE checkpoint waits for the other connection's readers. With a short busy
    # timeout it gives up after 0.2 s instead, so pruning cannot stall publishing or a
    # shutdown. The WAL is then cut back at a later round or by journal_size_limit.
    # Each step on its own: a checkpoint that readers hold up must not skip the vacuum, which returns free pages.
    # The vacuum frees one page per step of its statement; executescript steps it to the end, execute only once.
    spool.db.execute("PRAGMA busy_timeout=200")
    try:
        for step in (
            lambda: spool.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall(),
            lambda: spool.db.executescript("PRAGMA incremental_vacuum;"),
            lambda: spool.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall(),
        ):
            try:
                step()
            except sqlite3.OperationalError:
                pass  # the other connection holds the lock: the next round does this step
    finally:
        spool.db.execute("PRAGMA busy_timeout=10000")


async def housekeep(
    spool: SpoolThread, config: SpoolConfig, metrics: AgentMetrics, *, keep: Iterable[tuple[str, int, int]], log: Any, limit: LogLimiter
) -> None:
    """Run one housekeeping round of the agent: prune, count what went, then set the size gauge and the alarm.

    Raw events dropped before a minute record summarized them are logged as
    an error, rate-limited. The alarm is logged when it turns on and again
    when it clears.
    """
    cap = int(config.max_mb * 1024 * 1024)
    now_ms = time.time_ns() // 1_000_000
    retention_ms = int(config.telemetry_retention_h * 3_600_000)
    deleted = await spool.call(prune, cap, now_ms=now_ms, retention_ms=retention_ms, keep=list(keep))
    for kind, count in deleted.items():
        if count:
            metrics.spool_pruned.labels(kind).inc(count)
    if deleted["unsummarized_events"] and (held := limit("spool_full_events_dropped")) is not None:
        log.error("spool_full_events_dropped", dropped=deleted["unsummarized_events"], cap_mb=config.max_mb, repeats_not_logged=held)
    used = await spool.call(used_bytes)
    metrics.spool_bytes.set(used)
    alarm = used >= cap * config.alarm_ratio
    if alarm and not metrics.value("valuegate_spool_alarm"):
        log.warning("spool_alarm", used_mb=round(used / 1048576, 1), cap_mb=config.max_mb, alarm_ratio=config.alarm_ratio)
    elif not alarm and metrics.value("valuegate_spool_alarm"):
        log.info("spool_alarm_cleared", used_mb=round(used / 1048576, 1))
    metrics.spool_alarm.set(int(alarm))
