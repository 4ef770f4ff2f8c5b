"""The spool cap across an agent restart: a WAL left by a killed process, and a checkpoint that the other connection holds up.

The cap counts the database, the WAL and the WAL index as they are on disk,
but only the rows' pages decide what is pruned, so a restarted agent keeps
the raw events that a steady one keeps.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from valuegate.edge.retention import data_bytes, prune, rows_limit, used_bytes, wal_limit
from valuegate.edge.spool import Spool
from valuegate.edge.spool_rows import MachineBatch, StateEvent

EVENTS = 9000
UNSUMMARIZED = 11
# A small cap, as spool.max_mb 3.8 sets it.
CAP = int(3.8 * 1024 * 1024)

# The agent before the restart: its spool is filled and summarized but for the newest events, then it is
# killed (os._exit, so SQLite neither checkpoints nor deletes the WAL) after a few writes with no checkpoint.
KILLED_AGENT = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from valuegate.edge.retention import prune
    from valuegate.edge.spool import Spool
    from valuegate.edge.spool_rows import MachineBatch, StateEvent

    events, unsummarized, cap = (int(arg) for arg in sys.argv[2:5])
    spool = Spool(Path(sys.argv[1]))
    spool.append([MachineBatch("m1", [StateEvent(i, 0, "r" * 300) for i in range(events)], [], events)])
    spool.db.execute("UPDATE events SET summarized = 1 WHERE ts_ms < ?", (events - unsummarized,))
    prune(spool, cap, now_ms=0, retention_ms=10**12)
    spool.db.execute("PRAGMA wal_autocheckpoint=0")
    with spool.transaction(sync="NORMAL"):
        spool.db.execute("UPDATE events SET reason = ? WHERE id % 3 = 0", ("s" * 300,))
    os._exit(0)
    """
)


def file_sizes(path: Path) -> dict[str, int]:
    sizes = {}
    for suffix in ("", "-wal", "-shm"):
        file = Path(f"{path}{suffix}")
        sizes[suffix or "db"] = file.stat().st_size if file.exists() else 0
    return sizes


def kill_after_writes(path: Path) -> dict[str, int]:
    """Run the killed agent on ``path`` and return the sizes of the files it leaves."""
    command = [sys.executable, "-c", KILLED_AGENT, str(path), str(EVENTS), str(UNSUMMARIZED), str(CAP)]
    subprocess.run(command, check=True, timeout=120)
    return file_sizes(path)


def event_counts(spool: Spool) -> dict[int, int]:
    return dict(spool.db.execute("SELECT summarized, count(*) FROM events GROUP BY summarized").fetchall())


@pytest.fixture
def steady(tmp_path: Path) -> dict[int, int]:
    """The events that a steady agent keeps under the cap, from the same rows."""
    spool = Spool(tmp_path / "steady" / "spool.db")
    try:
        spool.append([MachineBatch("m1", [StateEvent(i, 0, "r" * 300) for i in range(EVENTS)], [], EVENTS)])
        spool.db.execute("UPDATE events SET summarized = 1 WHERE ts_ms < ?", (EVENTS - UNSUMMARIZED,))
        prune(spool, CAP, now_ms=0, retention_ms=10**12)
        assert used_bytes(spool) <= CAP
        return event_counts(spool)
    finally:
        spool.close()


def test_open_truncates_leftover_wal(tmp_path: Path, steady: dict[int, int]) -> None:
    path = tmp_path / "spool.db"
    left = kill_after_writes(path)
    assert left["-wal"] > 1_000_000

    spool = Spool(path)
    try:
        assert file_sizes(path)["-wal"] == 0
        assert event_counts(spool) == steady
        assert spool.db.execute("SELECT count(*) FROM events WHERE reason LIKE 's%'").fetchone()[0] == EVENTS // 3
    finally:
        spool.close()


def test_held_checkpoint_prunes_nothing(tmp_path: Path, steady: dict[int, int]) -> None:
    """The WAL grows while the other connection reads, so the files pass the cap: the size counts it, and pruning deletes nothing for it."""
    path = tmp_path / "spool.db"
    kill_after_writes(path)
    spool = Spool(path, wal_limit_bytes=wal_limit(CAP))
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        # The pipeline's connection in the middle of a read, which keeps a checkpoint from emptying the WAL.
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM events").fetchone()
        for remainder in range(3):
            with spool.transaction(sync="NORMAL"):
                spool.db.execute("UPDATE events SET reason = ? WHERE id % 3 = ?", ("t" * 300, remainder))
        assert file_sizes(path)["-wal"] > CAP - data_bytes(spool)
        assert used_bytes(spool) == sum(file_sizes(path).values())
        assert used_bytes(spool) > CAP

        deleted = prune(spool, CAP, now_ms=0, retention_ms=10**12)
        assert set(deleted) == {"summarized_events", "minutes", "acked_payloads", "baseline_minutes", "acked_vouchers", "unsummarized_events"}
        assert not any(deleted.values()), deleted
        assert event_counts(spool) == steady
        assert steady[0] == UNSUMMARIZED

        # Once the read ends, the next round empties the WAL and the files fit the cap again.
        reader.execute("COMMIT")
        prune(spool, CAP, now_ms=0, retention_ms=10**12)
        assert file_sizes(path)["-wal"] == 0
        assert used_bytes(spool) <= CAP
    finally:
        reader.close()
        spool.close()


def test_rows_pruned_below_wal_share(tmp_path: Path) -> None:
    """Rows are pruned to the cap less the WAL's share, so that the WAL has room without passing the cap."""
    spool = Spool(tmp_path / "spool.db", wal_limit_bytes=wal_limit(CAP))
    try:
        spool.append([MachineBatch("m1", [StateEvent(i, 0, "r" * 300) for i in range(2 * EVENTS)], [], 2 * EVENTS)])
        spool.db.execute("UPDATE events SET summarized = 1")
        deleted = prune(spool, CAP, now_ms=0, retention_ms=10**12)
        assert deleted["summarized_events"] > 0
        assert data_bytes(spool) <= rows_limit(CAP)
        assert rows_limit(CAP) == CAP - CAP // 8 - 32 * 1024
        assert used_bytes(spool) <= CAP
    finally:
        spool.close()
