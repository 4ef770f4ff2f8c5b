"""The on-disk spool: one SQLite database in WAL mode holding everything the agent must not lose.

Durability policy. Every step writes its input to disk before the next step
reads it. Normalized state events and counter readings are committed
before the minute records computed from them, and minute records before
the day results. A voucher enters the outbox in the same transaction that
advances the gateway's sequence and chain head.

* Transactions that issue vouchers or advance the sequence run with
  ``synchronous=FULL``: the WAL is fsynced at each commit, so a committed
  voucher survives a power cut. In WAL mode that fsync also makes every
  earlier commit durable, so nothing a voucher was computed from can be
  lost while the voucher survives.
* Acknowledgements commit with ``synchronous=NORMAL``. A power cut can drop
  the newest of them, whole and in order. The vouchers they covered are
  then above the acknowledged sequence again, in the outbox, and are sent again. The cloud stores each
  voucher once and acknowledges it again, so losing an ack costs a resend,
  never a voucher.
* Minute records, plant days and anchor days are derived from what is
  already on disk and commit with ``synchronous=NORMAL``. A power cut can
  only drop the newest commits, whole and in order, and the pipeline then
  computes them again from the events they were made from, because the
  events' ``summarized`` marks are dropped in the same commits.
* Sample batches use ``spool.sample_sync`` (``full`` by default). ``full``
  keeps every committed state change through a power cut, because the PLC
  cannot send a past transition again; the cost is one fsync per batch,
  and the agent commits one batch per poll cycle, not one per sample.
  ``normal`` keeps commits through a crash of the process (kill -9) but a
  power cut may lose the batches since the last fsync; choose it only on
  storage where fsync is slow and the loss is acceptable.

Disk use is bounded by :func:`valuegate.edge.retention.prune`. A checkpoint
starts when the WAL reaches half of ``wal_limit_bytes`` and cuts the WAL file
back to that limit. A WAL that a killed process left behind is checkpointed
and truncated when the spool opens.

A voucher's acknowledgement confirms that the cloud stored the voucher, not
that its records arrived, because a broker restart without persistence drops
what it queued. Records therefore stay for the telemetry retention after the ack,
with the acknowledged voucher's scope, so that a cloud request for them
can still be answered.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import structlog

from .metrics import LogLimiter
from .spool_rows import INT64_MAX, INT64_MIN, Carry, CounterReading, MachineBatch, Progress, StateEvent, split_unfit
from .spool_schema import SCHEMA_VERSION, create_or_upgrade

__all__ = (
    "SCHEMA_VERSION",
    "SpoolError",
    "Spool",
    "SpoolReader",
    "SpoolThread",
    "WAL_LIMIT_BYTES",
)

T = TypeVar("T")

log = structlog.get_logger("valuegate.edge.spool")

# Default size limit of the WAL file (journal_size_limit); the agent sets a smaller one for a small cap (:func:`valuegate.edge.retention.wal_limit`).
WAL_LIMIT_BYTES = 4 * 1024 * 1024


class SpoolError(RuntimeError):
    """The spool database cannot be opened or is from an incompatible version; ``path`` names it."""

    def __init__(self, message: str, *, path: Path) -> None:
        super().__init__(message)
        self.path = path


class Spool:
    """The spool database; use from one thread only (see :class:`valuegate.edge.agent` for the worker thread)."""

    def __init__(self, path: Path, *, sample_sync: str = "full", wal_limit_bytes: int = WAL_LIMIT_BYTES) -> None:
        self.path = path
        self.sample_sync = sample_sync.upper()
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            # The spool contains plant data, so a new one is readable by its owner only. SQLite gives its WAL the same mode.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        except OSError as exc:
            raise SpoolError(f"cannot create the spool {path}: {exc.strerror}; check that the state folder is writable", path=path) from exc
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            mode = self.db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot open the spool {path}: {exc}; check that the state folder is writable", path=path) from exc
        if mode.lower() != "wal":
            raise SpoolError(f"the spool {path} cannot use WAL mode (got {mode!r}); put the state folder on a local file system", path=path)
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA busy_timeout=10000")
        # Some builds (Debian's among them) zero every deleted row by default, which makes deleting acknowledged vouchers
        # and pruned samples write each page twice. FAST zeroes only where that costs no extra write; the file is the owner's alone (0600).
        self.db.execute("PRAGMA secure_delete=FAST")
        # Checkpoint at half the limit, so that the WAL reaches the limit only with a large transaction or a checkpoint
        # that readers hold up. After a checkpoint the WAL file is cut back to the limit.
        page_size = self.db.execute("PRAGMA page_size").fetchone()[0]
        self.db.execute(f"PRAGMA wal_autocheckpoint={max(1, wal_limit_bytes // page_size // 2)}")
        self.db.execute(f"PRAGMA journal_size_limit={wal_limit_bytes}")
        with self.transaction():
            found, version = create_or_upgrade(self.db)
        if found != version:
            log.info(
                "spool_upgraded", path=str(path), from_version=found, to_version=version,
                reason="an earlier release wrote this spool; agents before this release cannot open it any more",
            )  # fmt: skip
        self._truncate_wal()
        self.rejected: dict[str, int] = {}
        self._limit = LogLimiter()
        if version != SCHEMA_VERSION:
            raise SpoolError(f"the spool {path} has schema version {version}; this agent reads version {SCHEMA_VERSION}", path=path)

    def close(self) -> None:
        self.db.close()

    def _truncate_wal(self) -> None:
        """Checkpoint the WAL and cut it to zero bytes, waiting at most 0.2 s for other connections.

        A process that was killed leaves its WAL behind, up to the limit or more, and nothing else
        cuts it back until the first housekeeping round.
        """
        self.db.execute("PRAGMA busy_timeout=200")
        try:
            busy = self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.OperationalError:
            busy = 1
        finally:
            self.db.execute("PRAGMA busy_timeout=10000")
        if busy:
            log.info("spool_wal_kept", path=str(self.path), reason="another connection is using the spool; housekeeping checkpoints the WAL later")

    @contextmanager
    def transaction(self, *, sync: str = "FULL") -> Iterator[sqlite3.Connection]:
        """Run the block in one write transaction committed at the given synchronous level."""
        self.db.execute(f"PRAGMA synchronous={sync}")
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- meta -------------------------------------------------------------

    def meta(self, key: str) -> str:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else ""

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    # -- samples ------------------------------------------------------------

    def append(self, batches: Iterable[MachineBatch]) -> int:
        """Commit state events, counter readings and watermarks of one or more batches; return rows written.

        A number that SQLite cannot store (an integer outside int64) is
        rejected before the insert and logged with its machine and field, and
        counted per machine in ``rejected``; the rest of the batch is stored.
        """
        written = 0
        batches = [self._checked(batch) for batch in batches]
        with self.transaction(sync=self.sample_sync):
            for batch in batches:
                self.db.execute("INSERT OR IGNORE INTO machines (machine) VALUES (?)", (batch.machine,))
                state_rows = [(batch.machine, e.ts_ms, 0, e.code, e.reason, int(e.uncertain), None, None) for e in batch.states]
                counter_rows = [(batch.machine, c.ts_ms, 1, None, None, 0, c.tag, c.value) for c in batch.counters]
                self.db.executemany(
                    "INSERT INTO events (machine, ts_ms, kind, code, reason, uncertain, tag, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    state_rows + counter_rows,
                )
                written += len(state_rows) + len(counter_rows)
                missed = sum(e.missed for e in batch.states)
                if batch.watermark_ms is not None or missed:
                    self.db.execute(
                        "UPDATE machines SET watermark_ms = max(watermark_ms, ?), missed_transitions = missed_transitions + ? WHERE machine = ?",
                        (batch.watermark_ms or 0, missed, batch.machine),
                    )
        return written

    def _checked(self, batch: MachineBatch) -> MachineBatch:
        """Return ``batch`` without the events and watermark whose integers do not fit SQLite's int64, logging what was dropped."""
        kept, rejected, count = split_unfit(batch)
        if not count:
            return kept
        self.rejected[batch.machine] = self.rejected.get(batch.machine, 0) + count
        if (held := self._limit(batch.machine)) is not None:
            log.error(
                "spool_values_rejected", machine=batch.machine, count=count, rejected=rejected, repeats_not_logged=held,
                reason=f"integers outside {INT64_MIN}..{INT64_MAX} cannot be stored; check the machine's clock and counter tags",
            )
        return kept

    def progress(self, machine: str) -> Progress:
        row = self.db.execute(
            "SELECT watermark_ms, minutes_done_ms, carry, missed_transitions, day_done FROM machines WHERE machine = ?", (machine,)
        ).fetchone()
        if row is None:
            return Progress(machine, 0, None, None, 0, None)
        return Progress(machine, row[0], row[1], Carry.from_json(row[2]), row[3], row[4])

    def first_event_ms(self, machine: str) -> int | None:
        row = self.db.execute("SELECT min(ts_ms) FROM events WHERE machine = ?", (machine,)).fetchone()
        return row[0]

    def events(self, machine: str, start_ms: int, end_ms: int) -> tuple[list[StateEvent], list[CounterReading]]:
        """Return the events of ``machine`` stamped before ``end_ms`` and not yet summarized, in time order.

        Events stamped before ``start_ms`` arrived after their minute was
        summarized; the caller moves them to the first open minute.
        """
        rows = self.db.execute(
            "SELECT ts_ms, kind, code, reason, uncertain, tag, value FROM events "
            "WHERE machine = ? AND summarized = 0 AND ts_ms < ? ORDER BY ts_ms, id",
            (machine, end_ms),
        ).fetchall()
        states: list[StateEvent] = []
        counters: list[CounterReading] = []
        for ts_ms, kind, code, reason, uncertain, tag, value in rows:
            ts_ms = max(ts_ms, start_ms)
            if kind == 0:
                states.append(StateEvent(ts_ms, code, reason, bool(uncertain)))
            else:
                counters.append(CounterReading(ts_ms, tag, value))
        return states, counters

    def store_minutes(self, machine: str, records: list[tuple[int, str]], *, done_ms: int, carry: Carry) -> None:
        """Store summarized minutes, advance the machine's progress and mark the events they summarize, in one transaction."""
        with self.transaction(sync="NORMAL"):
            self.db.executemany(
                "INSERT OR REPLACE INTO minutes (machine, minute_ms, record) VALUES (?, ?, ?)",
                [(machine, minute_ms, record) for minute_ms, record in records],
            )
            self.db.execute(
                "UPDATE machines SET minutes_done_ms = ?, carry = ? WHERE machine = ?",
                (done_ms, carry.to_json(), machine),
            )
            self.db.execute("UPDATE events SET summarized = 1 WHERE machine = ? AND summarized = 0 AND ts_ms < ?", (machine, done_ms))

    def minute_texts(self, machine: str, start_ms: int, end_ms: int) -> list[str]:
        """Return the stored records (canonical JSON text) of ``machine`` in ``[start_ms, end_ms)``, in minute order."""
        rows = self.db.execute(
            "SELECT record FROM minutes WHERE machine = ? AND minute_ms >= ? AND minute_ms < ? ORDER BY minute_ms",
            (machine, start_ms, end_ms),
        ).fetchall()
        return [row[0] for row in rows]

    def minute_records(self, machine: str, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT record FROM minutes WHERE machine = ? AND minute_ms >= ? AND minute_ms < ? ORDER BY minute_ms",
            (machine, start_ms, end_ms),
        ).fetchall()
        return [json.loads(row[0]) for row in rows]

    # -- days and anchors -------------------------------------------------

    def store_day(self, machine: str, plant_date: str, start_ms: int, end_ms: int, result: dict[str, Any]) -> None:
        with self.transaction(sync="NORMAL"):
            self.db.execute(
                "INSERT OR REPLACE INTO days (machine, plant_date, start_ms, end_ms, result) VALUES (?, ?, ?, ?, ?)",
                (machine, plant_date, start_ms, end_ms, json.dumps(result)),
            )
            self.db.execute("UPDATE machines SET day_done = ? WHERE machine = ?", (plant_date, machine))

    def day(self, machine: str, plant_date: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT result FROM days WHERE machine = ? AND plant_date = ?", (machine, plant_date)).fetchone()
        return json.loads(row[0]) if row else None

    def store_anchor_day(self, contract: str, anchor: str, plant_date: str, role: str, result: dict[str, Any]) -> None:
        with self.transaction(sync="NORMAL"):
            self.db.execute(
                "INSERT OR IGNORE INTO anchor_days (contract, anchor, plant_date, role, result) VALUES (?, ?, ?, ?, ?)",
                (contract, anchor, plant_date, role, json.dumps(result)),
            )

    def anchor_days(self, contract: str, anchor: str, role: str, *, unissued: bool = False) -> list[tuple[str, dict[str, Any], int | None]]:
        """Return the anchor's days of ``role`` by plant date; with ``unissued``, only days that have no voucher yet."""
        where = " AND seq IS NULL" if unissued else ""
        rows = self.db.execute(
            f"SELECT plant_date, result, seq FROM anchor_days WHERE contract = ? AND anchor = ? AND role = ?{where} ORDER BY plant_date",
            (contract, anchor, role),
        ).fetchall()
        return [(plant_date, json.loads(result), seq) for plant_date, result, seq in rows]

    def anchor_day_count(self, contract: str, anchor: str, role: str) -> int:
        """Return how many days of ``role`` the anchor has.

        Anchor days are only ever added and their results never change (only the voucher ``seq`` is filled in later),
        so the count shows whether a baseline built earlier is still current.
        """
        row = self.db.execute("SELECT count(*) FROM anchor_days WHERE contract = ? AND anchor = ? AND role = ?", (contract, anchor, role)).fetchone()
        return int(row[0])


class SpoolReader:
    """A second connection to the spool that only reads, so that a query need not wait for a write transaction.

    In WAL mode a read returns what every transaction committed before it started,
    while the writer goes on. ``query_only`` refuses any write through it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA query_only=1")
            self.db.execute("PRAGMA busy_timeout=10000")
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot open the spool {path} for reading: {exc}; check that the state folder is readable", path=path) from exc

    def close(self) -> None:
        self.db.close()


class SpoolThread:
    """Runs every spool call on one dedicated thread, so fsyncs never stall the event loop.

    ``await spool.call(fn, *args, **kwargs)`` runs ``fn(spool, *args, **kwargs)`` on that thread;
    calls run one at a time in the order they were made. ``await spool.read(fn, ...)`` runs a
    read-only ``fn(reader, ...)`` on a second thread with its own connection (a :class:`SpoolReader`,
    opened on first use), which a long write transaction on the first thread does not hold up.
    """

    def __init__(self, path: Path, *, sample_sync: str = "full", wal_limit_bytes: int = WAL_LIMIT_BYTES) -> None:
        self.path = path
        self._sample_sync = sample_sync
        self._wal_limit_bytes = wal_limit_bytes
        self._executor: ThreadPoolExecutor | None = None
        self._read_executor: ThreadPoolExecutor | None = None
        self._reader: SpoolReader | None = None
        self.spool: Spool | None = None

    async def __aenter__(self) -> SpoolThread:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="valuegate-spool")
        loop = asyncio.get_running_loop()
        try:
            self.spool = await loop.run_in_executor(self._executor, lambda: Spool(self.path, sample_sync=self._sample_sync, wal_limit_bytes=self._wal_limit_bytes))
        except BaseException:
            self._executor.shutdown(wait=True)
            self._executor = None
            raise
        return self

    async def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._executor is None or self.spool is None:
            msg = f"the spool {self.path} is not open; use it inside `async with SpoolThread(...)`"
            raise SpoolError(msg, path=self.path)
        spool = self.spool
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: function(spool, *args, **kwargs))

    async def read(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._executor is None or self.spool is None:
            msg = f"the spool {self.path} is not open; use it inside `async with SpoolThread(...)`"
            raise SpoolError(msg, path=self.path)
        if self._read_executor is None:
            self._read_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="valuegate-spool-read")
        return await asyncio.get_running_loop().run_in_executor(self._read_executor, lambda: function(self._open_reader(), *args, **kwargs))

    def _open_reader(self) -> SpoolReader:
        # Runs on the read thread only, so two first reads cannot open two connections.
        if self._reader is None:
            self._reader = SpoolReader(self.path)
        return self._reader

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    async def __aexit__(self, *exc: object) -> None:
        executor, spool = self._executor, self.spool
        read_executor = self._read_executor
        self._executor, self.spool, self._read_executor = None, None, None
        if read_executor is not None:
            await asyncio.get_running_loop().run_in_executor(read_executor, self._close_reader)
            read_executor.shutdown(wait=True)
        if executor is None:
            return
        if spool is not None:
            await asyncio.get_running_loop().run_in_executor(executor, spool.close)
        executor.shutdown(wait=True)
