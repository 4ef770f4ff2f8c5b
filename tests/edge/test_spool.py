"""The spool: WAL mode, atomic issuing, acks, and the pruning order under a disk cap."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog

from valuegate.edge import keys, outbox
from valuegate.edge.issuer import VoucherSigner
from valuegate.edge.retention import data_bytes, prune, rows_limit, used_bytes
from valuegate.edge.spool import Spool
from valuegate.edge.spool_rows import Carry, CounterReading, MachineBatch, StateEvent

from .helpers import issue_synthetic, outbox_depth


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool.db")


def cap_for(rows_bytes: int) -> int:
    """Return the smallest spool cap under which :func:`prune` keeps ``rows_bytes`` of database pages."""
    cap = rows_bytes
    while rows_limit(cap) < rows_bytes:
        cap += rows_bytes - rows_limit(cap)
    return cap


@pytest.fixture
def signer(tmp_path: Path) -> VoucherSigner:
    keys.create_key(tmp_path / "keys")
    return VoucherSigner(tmp_path / "keys", tenant="acme", site="suzhou", gateway="gw-1")


def test_wal_mode_and_full_sync(spool: Spool) -> None:
    assert spool.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert spool.db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    assert spool.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL until a transaction sets its own level


def commit_levels(spool: Spool, action: Callable[[], object]) -> list[str]:
    """Run ``action`` and return the ``synchronous`` level in force at each COMMIT it made on the spool's connection."""
    statements: list[str] = []
    spool.db.set_trace_callback(statements.append)
    try:
        action()
    finally:
        spool.db.set_trace_callback(None)
    levels: list[str] = []
    current = "unset"
    for statement in statements:
        if statement.upper().startswith("PRAGMA SYNCHRONOUS="):
            current = statement.partition("=")[2].strip().upper()
        elif statement.upper() == "COMMIT":
            levels.append(current)
    return levels


@pytest.mark.parametrize("sample_sync", ["full", "normal"])
def test_synchronous_level_per_write(tmp_path: Path, signer: VoucherSigner, sample_sync: str) -> None:
    """Samples commit at ``sample_sync``, derived rows and acks at NORMAL, vouchers at FULL, as the spool module and the install guide document."""
    spool = Spool(tmp_path / "spool.db", sample_sync=sample_sync)
    batch = MachineBatch("filler-1", states=[StateEvent(60_000, 0)], counters=[CounterReading(60_000, "containers", 5.0)], watermark_ms=120_000)
    assert commit_levels(spool, lambda: spool.append([batch])) == [sample_sync.upper()]

    carry = Carry(0, None, False, {})
    assert commit_levels(spool, lambda: spool.store_minutes("filler-1", [(60_000, "{}")], done_ms=120_000, carry=carry)) == ["NORMAL"]
    assert commit_levels(spool, lambda: spool.store_anchor_day("c-1", "oee-filler", "2026-02-01", "reporting", {})) == ["NORMAL"]

    items = issue_synthetic(spool, signer, 2)
    assert len(items) == 2
    assert commit_levels(spool, lambda: issue_synthetic(spool, signer, 1, first_date="2026-02-03")) == ["NORMAL", "FULL"]
    assert commit_levels(spool, lambda: outbox.ack(spool, 3)) == ["NORMAL"]
    assert outbox_depth(spool) == 0


def test_append_rejects_integers_beyond_int64(spool: Spool) -> None:
    huge = 5349192780042338304 * 2  # a uint64 PLC clock read with the wrong word order, above 2**63 - 1
    batch = MachineBatch(
        "filler-1",
        states=[StateEvent(1_000, 0), StateEvent(huge, 3)],
        counters=[CounterReading(1_000, "containers", 5.0), CounterReading(huge, "containers", 6.0)],
        watermark_ms=huge,
    )
    other = MachineBatch("filler-2", states=[StateEvent(2_000, 0)], watermark_ms=2_000)
    with structlog.testing.capture_logs() as logged:
        assert spool.append([batch, other]) == 3
    rows = spool.db.execute("SELECT machine, ts_ms, kind FROM events ORDER BY machine, kind").fetchall()
    assert rows == [("filler-1", 1_000, 0), ("filler-1", 1_000, 1), ("filler-2", 2_000, 0)]
    assert spool.progress("filler-1").watermark_ms == 0
    assert spool.progress("filler-2").watermark_ms == 2_000
    assert spool.rejected == {"filler-1": 3}
    assert [(entry["event"], entry["machine"], entry["count"]) for entry in logged] == [("spool_values_rejected", "filler-1", 3)]
    assert logged[0]["rejected"]["watermark_ms"] == huge


def test_issue_numbers_and_chains(spool: Spool, signer: VoucherSigner) -> None:
    issued = issue_synthetic(spool, signer, 3)
    assert [v["credentialSubject"]["seq"] for v in issued] == [1, 2, 3]
    head = outbox.chain_head(spool)
    assert head.next_seq == 4
    assert outbox_depth(spool) == 3
    # The same anchor days again: nothing new is issued and the sequence stays.
    again = issue_synthetic(spool, signer, 3)
    assert again == []
    assert outbox.chain_head(spool).next_seq == 4


def test_failed_signing_leaves_no_trace(spool: Spool, signer: VoucherSigner) -> None:
    issue_synthetic(spool, signer, 2)
    head = outbox.chain_head(spool)

    def broken_sign(*_args: object) -> dict:
        raise RuntimeError("disk full while signing")

    spool.store_anchor_day("c-1", "oee-filler", "2030-01-01", "reporting", {})
    from valuegate.edge.outbox import PendingVoucher

    item = PendingVoucher("c-1", "oee-filler", "2030-01-01", ("filler-1",), 0, 1, {})
    with pytest.raises(RuntimeError):
        outbox.issue_vouchers(spool, [item], broken_sign, now_ms=0)
    assert outbox.chain_head(spool) == head
    assert outbox_depth(spool) == 2


def test_ack_removes_covered_and_clamps(spool: Spool, signer: VoucherSigner) -> None:
    issue_synthetic(spool, signer, 5)
    assert outbox.ack(spool, 3) == (3, 3)
    assert outbox.ack(spool, 2) == (3, 0)  # an older ack changes nothing
    assert outbox.ack(spool, 99) == (5, 2)  # beyond the last issued: clamped
    assert outbox_depth(spool) == 0
    assert outbox.chain_head(spool).acked_through == 5


def _fill(spool: Spool, machine: str, start: int, count: int) -> None:
    states = [StateEvent(start + i * 1000, i % 4, "x" * 200) for i in range(count)]
    counters = [CounterReading(start + i * 1000, "c", float(i)) for i in range(count)]
    spool.append([MachineBatch(machine, states, counters, start + count * 1000)])


def test_prune_order_under_cap(spool: Spool, signer: VoucherSigner) -> None:
    issue_synthetic(spool, signer, 20)
    _fill(spool, "m1", 0, 4000)  # summarized below
    _fill(spool, "m1", 10_000_000, 4000)  # not summarized
    spool.store_minutes("m1", [(0, json.dumps({"minute": 0}))], done_ms=5_000_000, carry=Carry(0, None, False, {}))
    summarized = spool.db.execute("SELECT count(*) FROM events WHERE summarized = 1").fetchone()[0]
    assert summarized == 8000

    # A cap just below the current size: summarized events go, nothing else.
    deleted = prune(spool, cap_for(data_bytes(spool) - 200_000), now_ms=0, retention_ms=10**12)
    assert deleted["summarized_events"] > 0
    assert deleted["unsummarized_events"] == 0
    assert outbox_depth(spool) == 20
    assert spool.db.execute("SELECT count(*) FROM minutes").fetchone()[0] == 1  # not published: kept

    # A cap far below: every raw event goes, oldest first, and still no voucher or record.
    deleted = prune(spool, 10_000, now_ms=0, retention_ms=10**12)
    assert spool.db.execute("SELECT count(*) FROM events WHERE summarized = 1").fetchone()[0] == 0
    assert deleted["unsummarized_events"] > 0
    assert outbox_depth(spool) == 20
    assert spool.db.execute("SELECT count(*) FROM minutes").fetchone()[0] == 1


def test_prune_keeps_newest_unsummarized(spool: Spool) -> None:
    _fill(spool, "m1", 0, 6000)
    prune(spool, 10**12, now_ms=0, retention_ms=10**12)  # checkpoints the WAL, deletes nothing here
    before = used_bytes(spool)
    prune(spool, before // 2, now_ms=0, retention_ms=10**12)
    remaining = [row[0] for row in spool.db.execute("SELECT ts_ms FROM events ORDER BY ts_ms")]
    assert remaining
    assert remaining[-1] == 5_999_000  # the newest survive
    assert remaining[0] > 0  # the oldest went first
    assert used_bytes(spool) <= before // 2


def _two_days_published_first_acked(spool: Spool, signer: VoucherSigner) -> None:
    """Two plant days of published records for filler-1; one voucher covers day one and is acknowledged."""
    from valuegate.edge.outbox import PendingVoucher

    from .helpers import synthetic_body

    day = 86_400_000
    minutes = [(m * 60_000, json.dumps({"minute": m})) for m in range(0, 2 * 1440)]
    spool.store_minutes("filler-1", minutes, done_ms=2 * day, carry=Carry(0, None, False, {}))
    spool.store_day("filler-1", "1970-01-01", 0, day, {})
    spool.store_day("filler-1", "1970-01-02", day, 2 * day, {})
    outbox.mark_published(spool, [(m, "filler-1") for m, _ in minutes], now_ms=1_000)
    spool.store_anchor_day("c-1", "oee-filler", "1970-01-01", "reporting", {})
    signer.issue(spool, [PendingVoucher("c-1", "oee-filler", "1970-01-01", ("filler-1",), 0, day, synthetic_body("1970-01-01"))], now_ms=0)
    outbox.ack(spool, 1, now_ms=1_500)


def test_published_records_stay_for_retention_after_ack(spool: Spool, signer: VoucherSigner) -> None:
    """The ack covers the voucher, not its records: they and the voucher's scope stay until the retention has passed."""
    _two_days_published_first_acked(spool, signer)
    assert outbox.voucher_span(spool, 1) == (["filler-1"], 0, 86_400_000)
    prune(spool, 10**12, now_ms=2_000, retention_ms=10**9)
    assert spool.db.execute("SELECT count(*) FROM minutes").fetchone()[0] == 2 * 1440
    assert len(outbox.records_for(spool, ["filler-1"], 0, 86_400_000)) == 1440
    prune(spool, 10**12, now_ms=10**9 + 2_000, retention_ms=10**9)
    assert spool.db.execute("SELECT count(*) FROM minutes").fetchone()[0] == 0
    assert outbox.voucher_span(spool, 1) is None


def test_cap_prunes_acked_records_before_unsummarized_events(spool: Spool, signer: VoucherSigner) -> None:
    """Under the cap, records an acknowledged voucher covers go after summarized events and before unsummarized ones."""
    _two_days_published_first_acked(spool, signer)
    _fill(spool, "m1", 10**10, 3000)  # not summarized
    deleted = prune(spool, cap_for(data_bytes(spool) - 50_000), now_ms=2_000, retention_ms=10**9)
    assert deleted["minutes"] > 0
    assert deleted["unsummarized_events"] == 0
    left = dict(spool.db.execute("SELECT covered, count(*) FROM minutes GROUP BY covered").fetchall())
    assert left[0] == 1440  # day two: no ack covers it, so it is never pruned
    assert left.get(1, 0) < 1440

def test_cap_prunes_baseline_records_before_unsummarized_events(spool: Spool, signer: VoucherSigner) -> None:
    """At the cap, published baseline records and acknowledged vouchers go before raw events not yet summarized."""
    _two_days_published_first_acked(spool, signer)
    _fill(spool, "m1", 10**10, 1500)  # 1,500 states and 1,500 counter readings, not summarized
    baseline = [("filler-1", 86_400_000, 2 * 86_400_000)]  # day two, which no voucher covers
    spool.db.execute("UPDATE vouchers SET payload = NULL")  # as after the payload stage
    deleted = prune(spool, cap_for(data_bytes(spool) - 120_000), now_ms=2_000, retention_ms=10**9, keep=baseline)
    assert deleted["baseline_minutes"] > 0
    assert deleted["unsummarized_events"] == 0
    assert spool.db.execute("SELECT count(*) FROM events WHERE summarized = 0").fetchone()[0] == 3000

    # Far below: the acknowledged voucher goes before the raw events, and then every published record of the baseline.
    deleted = prune(spool, 10_000, now_ms=2_000, retention_ms=10**9, keep=baseline)
    assert deleted["acked_vouchers"] == 1
    assert outbox.voucher_span(spool, 1) is None
    assert spool.db.execute("SELECT count(*) FROM minutes WHERE minute_ms >= 86400000").fetchone()[0] == 0
    assert deleted["unsummarized_events"] > 0


def test_cap_keeps_unacked_voucher_and_its_records(spool: Spool, signer: VoucherSigner) -> None:
    """Neither the baseline stage nor the voucher stage touches an unacknowledged voucher or records outside a baseline."""
    _two_days_published_first_acked(spool, signer)
    issue_synthetic(spool, signer, 2, first_date="1990-01-01")
    prune(spool, 10_000, now_ms=2_000, retention_ms=10**9, keep=[("filler-1", 0, 60_000)])
    assert outbox_depth(spool) == 2
    assert [row[0] for row in spool.db.execute("SELECT seq FROM vouchers ORDER BY seq")] == [2, 3]
    # Day two is published but no ack and no baseline covers it.
    assert spool.db.execute("SELECT count(*) FROM minutes WHERE minute_ms >= 86400000").fetchone()[0] == 1440


def test_baseline_records_outlast_retention(spool: Spool, signer: VoucherSigner) -> None:
    """Records inside a kept span (a contract's baseline period) stay after the retention; the others go."""
    _two_days_published_first_acked(spool, signer)
    prune(spool, 10**12, now_ms=10**9 + 2_000, retention_ms=10**9, keep=[("filler-1", 0, 86_400_000), ("other", 86_400_000, 2 * 86_400_000)])
    kept = spool.db.execute("SELECT min(minute_ms), max(minute_ms), count(*) FROM minutes").fetchone()
    assert kept == (0, 86_340_000, 1440)


def test_acknowledged_payloads_kept_for_retention(spool: Spool, signer: VoucherSigner) -> None:
    """An acknowledged voucher's signed payload stays for the telemetry retention, so a restored cloud can get it again."""
    issue_synthetic(spool, signer, 4)
    sent = {seq: bytes(payload) for seq, payload in spool.db.execute("SELECT seq, payload FROM vouchers")}
    outbox.ack(spool, 3, now_ms=1_000)
    assert outbox.acked_payloads(spool, 2, 3, limit=10) == ([(2, sent[2]), (3, sent[3])], 0)
    assert outbox.acked_payloads(spool, 1, 3, limit=2) == ([(1, sent[1]), (2, sent[2])], 0)
    prune(spool, 10**12, now_ms=10**9 + 2_000, retention_ms=10**9)
    assert outbox.acked_payloads(spool, 1, 3, limit=10) == ([], 3)  # past the retention: gone, and counted as gone


def test_acked_vouchers_pruned_by_ack_time(spool: Spool, signer: VoucherSigner) -> None:
    """An ack takes vouchers out of the outbox but keeps them. Retention removes those acked before its horizon and no others."""
    issue_synthetic(spool, signer, 5)
    assert outbox.ack(spool, 2, now_ms=1_000) == (2, 2)
    assert outbox.ack(spool, 4, now_ms=5_000) == (4, 2)
    assert outbox.ack(spool, 3, now_ms=6_000) == (4, 0)  # an older ack changes nothing
    assert [entry.seq for entry in outbox.pending(spool, 1, 10)] == [5]
    assert outbox.outbox_stats(spool)["depth"] == 1
    assert outbox.voucher_span(spool, 1) is not None
    prune(spool, 10**12, now_ms=4_000, retention_ms=1_000)  # horizon 3,000: only the ack at 1,000 is older
    assert [row[0] for row in spool.db.execute("SELECT seq FROM vouchers ORDER BY seq")] == [3, 4, 5]
    assert outbox.voucher_span(spool, 2) is None
    prune(spool, 10**12, now_ms=10**9, retention_ms=1_000)
    assert [row[0] for row in spool.db.execute("SELECT seq FROM vouchers ORDER BY seq")] == [5]  # unacknowledged: never pruned
    assert outbox.chain_head(spool).acked_through == 4


_VERSION_1_TABLES = (
    "CREATE TABLE outbox (seq INTEGER PRIMARY KEY, voucher_id TEXT NOT NULL, payload BLOB NOT NULL, machines TEXT NOT NULL, "
    "start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL, created_ms INTEGER NOT NULL)",
    "CREATE TABLE acked_spans (seq INTEGER PRIMARY KEY, machines TEXT NOT NULL, start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL, acked_ms INTEGER NOT NULL{payload})",
)


@pytest.mark.parametrize("with_payloads", [True, False], ids=["kept-payloads", "before-kept-payloads"])
def test_version_1_spool_upgraded_on_open(tmp_path: Path, with_payloads: bool) -> None:
    """A spool with the earlier outbox and acked_spans tables opens with every voucher, ack time and chain position kept."""
    import sqlite3

    path = tmp_path / "spool.db"
    Spool(path).close()
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE vouchers")
        db.execute("DROP TABLE acks")
        db.execute(_VERSION_1_TABLES[0])
        db.execute(_VERSION_1_TABLES[1].format(payload=", payload BLOB" if with_payloads else ""))
        if with_payloads:
            db.executemany("INSERT INTO acked_spans VALUES (?, ?, ?, ?, ?, ?)", [(1, '["m"]', 0, 60_000, 5, b"v1"), (2, '["m","n"]', 60_000, 120_000, 5, None), (3, '["m"]', 120_000, 180_000, 9, b"v3")])
        else:
            db.executemany("INSERT INTO acked_spans VALUES (?, ?, ?, ?, ?)", [(1, '["m"]', 0, 60_000, 5), (2, '["m","n"]', 60_000, 120_000, 5), (3, '["m"]', 120_000, 180_000, 9)])
        db.execute("INSERT INTO outbox VALUES (4, 'gw-1:4', X'7634', '[\"m\"]', 180000, 240000, 20)")
        db.executemany("UPDATE meta SET value = ? WHERE key = ?", [("1", "schema_version"), ("5", "next_seq"), ("3", "acked_through")])
    with structlog.testing.capture_logs() as logged:
        reopened = Spool(path)
    upgraded = [entry for entry in logged if entry["event"] == "spool_upgraded"]
    assert [(entry["from_version"], entry["to_version"]) for entry in upgraded] == [(1, 2)]
    try:
        assert reopened.meta("schema_version") == "2"
        assert {row[0] for row in reopened.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} >= {"vouchers", "acks"}
        assert reopened.db.execute("SELECT count(*) FROM sqlite_master WHERE name IN ('outbox', 'acked_spans')").fetchone()[0] == 0
        assert [(entry.seq, entry.payload, entry.created_ms) for entry in outbox.pending(reopened, 1, 10)] == [(4, b"v4", 20)]
        assert outbox.voucher_span(reopened, 2) == (["m", "n"], 60_000, 120_000)
        expected = ([(1, b"v1"), (3, b"v3")], 1) if with_payloads else ([], 3)
        assert outbox.acked_payloads(reopened, 1, 3, limit=10) == expected
        assert reopened.db.execute("SELECT through, acked_ms FROM acks ORDER BY through").fetchall() == [(2, 5), (3, 9)]
        assert outbox.chain_head(reopened) == outbox.ChainHead(5, None, 3)
        prune(reopened, 10**12, now_ms=1_007, retention_ms=1_000)  # horizon 7: the ack at 5 has passed, the one at 9 not
        assert [row[0] for row in reopened.db.execute("SELECT seq FROM vouchers ORDER BY seq")] == [3, 4]
    finally:
        reopened.close()
    with structlog.testing.capture_logs() as logged:
        Spool(path).close()  # a second open finds version 2 and changes nothing
    assert not [entry for entry in logged if entry["event"] == "spool_upgraded"]


def test_reclaim_returns_every_free_page(spool: Spool) -> None:
    """SQLite's incremental vacuum frees one page per step, so reclaiming must step it to the end, not once."""
    from valuegate.edge.retention import _reclaim

    _fill(spool, "filler-1", 0, 3_000)
    with spool.transaction():
        spool.db.execute("DELETE FROM events")
    _reclaim(spool)
    assert spool.db.execute("PRAGMA freelist_count").fetchone()[0] == 0
