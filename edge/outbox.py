"""The outbox: vouchers and telemetry records waiting in the spool until the cloud acknowledges them.

A voucher enters the outbox in the same transaction that takes its sequence
number and moves the chain head, so a crash leaves either both or neither.
It leaves only when the cloud's ``ack`` covers its sequence number; the
broker's PUBACK only moves the publisher on. The outbox is the part of the
spool's ``vouchers`` table above the acknowledged sequence: an ack moves
that sequence and keeps the vouchers it covers for the telemetry retention
(see :mod:`valuegate.edge.spool_schema`). Telemetry records are marked
published on PUBACK and deleted by the spool's pruning once their retention
has passed (sooner under disk pressure when an acknowledged voucher covers them).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .jcs import chain_hash
from .spool import Spool, SpoolReader
from .spool_schema import ACKED_THROUGH

__all__ = (
    "PendingVoucher",
    "OutboxEntry",
    "ChainHead",
    "issue_vouchers",
    "ack",
    "pending",
    "chain_head",
    "outbox_stats",
    "unpublished_records",
    "mark_published",
    "records_for",
    "voucher_span",
)


@dataclass(frozen=True, slots=True)
class PendingVoucher:
    """A voucher ready to be numbered and signed: which anchor-day it is for and what it commits to."""

    contract: str
    anchor: str
    plant_date: str
    machines: tuple[str, ...]
    start_ms: int
    end_ms: int
    body: Any
    """Whatever the signing callback needs to build the claims."""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    seq: int
    payload: bytes
    created_ms: int


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The next sequence number, the hash of the last voucher (None before the first) and the acknowledged sequence."""

    next_seq: int
    head_hash: str | None
    acked_through: int


def chain_head(spool: Spool) -> ChainHead:
    head = spool.meta("head_hash")
    return ChainHead(int(spool.meta("next_seq")), head or None, int(spool.meta("acked_through")))


def issue_vouchers(
    spool: Spool,
    items: Sequence[PendingVoucher],
    sign: Callable[[int, str | None, PendingVoucher], dict[str, Any] | tuple[dict[str, Any], str]],
    *,
    now_ms: int,
    before_sign: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Number, sign and store ``items`` in one transaction; return the signed vouchers.

    ``sign(seq, prev, item)`` builds and signs one voucher and may return
    its chain hash with it. ``before_sign(seq)``
    runs inside the transaction first, so that a key rotation recorded by
    another process cannot slip in between reading the key and taking the
    sequence number. Items whose anchor-day already has a voucher are skipped.
    """
    issued: list[dict[str, Any]] = []
    with spool.transaction() as db:
        head = chain_head(spool)
        seq, prev = head.next_seq, head.head_hash
        if before_sign is not None and items:
            before_sign(seq)
        for item in items:
            row = db.execute(
                "SELECT seq FROM anchor_days WHERE contract = ? AND anchor = ? AND plant_date = ?", (item.contract, item.anchor, item.plant_date)
            ).fetchone()
            if row is not None and row[0] is not None:
                continue
            signed = sign(seq, prev, item)
            document, digest = signed if isinstance(signed, tuple) else (signed, chain_hash(signed))
            payload = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
            db.execute(
                "INSERT INTO vouchers (seq, payload, machines, start_ms, end_ms, created_ms) VALUES (?, ?, ?, ?, ?, ?)",
                (seq, payload, json.dumps(list(item.machines)), item.start_ms, item.end_ms, now_ms),
            )
            db.execute(
                "UPDATE anchor_days SET seq = ? WHERE contract = ? AND anchor = ? AND plant_date = ?",
                (seq, item.contract, item.anchor, item.plant_date),
            )
            prev = digest
            seq += 1
            issued.append(document)
        spool.set_meta("next_seq", str(seq))
        spool.set_meta("head_hash", prev or "")
    return issued


def ack(spool: Spool, stored_through: int, *, now_ms: int | None = None) -> tuple[int, int]:
    """Apply a cloud ``ack``: move the acknowledged sequence to ``stored_through`` and mark the records its vouchers cover.

    The vouchers stay in the spool with their scope and signed payload, so
    that the voucher and its records can be sent again until the telemetry
    retention has passed (for a cloud restored from an older backup); the
    row written to ``acks`` dates that retention.

    Returns the new acknowledged sequence and the number of vouchers it
    took out of the outbox. An ack beyond the last issued sequence is
    clamped to it. The commit is not fsynced (see the spool's durability
    policy): an ack lost in a power cut only sends its vouchers again.
    """
    with spool.transaction(sync="NORMAL") as db:
        head = chain_head(spool)
        through = min(stored_through, head.next_seq - 1)
        if through <= head.acked_through:
            return head.acked_through, 0
        covered = db.execute("SELECT machines, start_ms, end_ms FROM vouchers WHERE seq > ? AND seq <= ?", (head.acked_through, through)).fetchall()
        db.executemany(
            "UPDATE minutes SET covered = 1 WHERE machine = ? AND minute_ms >= ? AND minute_ms < ?",
            _merged_spans((machine, start_ms, end_ms) for machines, start_ms, end_ms in covered for machine in json.loads(machines)),
        )
        db.execute(
            "INSERT OR REPLACE INTO acks (through, acked_ms) VALUES (?, ?)", (through, time.time_ns() // 1_000_000 if now_ms is None else now_ms)
        )
        spool.set_meta("acked_through", str(through))
    return through, len(covered)


def _merged_spans(spans: Iterable[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """Return the union of ``(machine, start_ms, end_ms)`` spans, joining those of a machine that touch or overlap."""
    merged: list[tuple[str, int, int]] = []
    for machine, start_ms, end_ms in sorted(spans):
        if merged and merged[-1][0] == machine and start_ms <= merged[-1][2]:
            if end_ms > merged[-1][2]:
                merged[-1] = (machine, merged[-1][1], end_ms)
        else:
            merged.append((machine, start_ms, end_ms))
    return merged


def pending(spool: Spool | SpoolReader, from_seq: int, limit: int) -> list[OutboxEntry]:
    rows = spool.db.execute(
        f"SELECT seq, payload, created_ms FROM vouchers WHERE seq >= ? AND seq > {ACKED_THROUGH} ORDER BY seq LIMIT ?", (from_seq, limit)
    ).fetchall()
    return [OutboxEntry(seq, bytes(payload), created_ms) for seq, payload, created_ms in rows]


def outbox_stats(spool: Spool) -> dict[str, int | None]:
    """Return the outbox depth, the creation time of the oldest voucher in it, and the unpublished telemetry count."""
    depth, oldest = spool.db.execute(f"SELECT count(*), min(created_ms) FROM vouchers WHERE seq > {ACKED_THROUGH}").fetchone()
    unpublished = spool.db.execute("SELECT count(*) FROM minutes WHERE published = 0").fetchone()[0]
    return {"depth": depth, "oldest_created_ms": oldest, "unpublished_records": unpublished}


def unpublished_records(spool: Spool | SpoolReader, after: tuple[int, str] | None, limit: int) -> list[tuple[int, str, str]]:
    """Return up to ``limit`` unpublished telemetry records after the ``(minute_ms, machine)`` cursor."""
    minute_ms, machine = after if after is not None else (-1, "")
    return spool.db.execute(
        "SELECT minute_ms, machine, record FROM minutes WHERE published = 0 AND (minute_ms, machine) > (?, ?) "
        "ORDER BY minute_ms, machine LIMIT ?",
        (minute_ms, machine, limit),
    ).fetchall()


def mark_published(spool: Spool, keys: Sequence[tuple[int, str]], now_ms: int) -> None:
    with spool.transaction(sync="NORMAL") as db:
        db.executemany(
            "UPDATE minutes SET published = 1, published_ms = ? WHERE minute_ms = ? AND machine = ?",
            [(now_ms, minute_ms, machine) for minute_ms, machine in keys],
        )


def records_for(spool: Spool, machines: Sequence[str], start_ms: int, end_ms: int) -> list[tuple[int, str, str]]:
    """Return the stored records of ``machines`` in ``[start_ms, end_ms)``, for resending a voucher's evidence."""
    rows: list[tuple[int, str, str]] = []
    for machine in machines:
        rows += spool.db.execute(
            "SELECT minute_ms, machine, record FROM minutes WHERE machine = ? AND minute_ms >= ? AND minute_ms < ? ORDER BY minute_ms",
            (machine, start_ms, end_ms),
        ).fetchall()
    return rows


def acked_payloads(spool: Spool, from_seq: int, through: int, limit: int) -> tuple[list[tuple[int, bytes]], int]:
    """Return the kept payloads of acknowledged vouchers ``from_seq..through`` (at most ``limit``, in order) and how many of that range are gone."""
    where = f"seq >= ? AND seq <= ? AND seq <= {ACKED_THROUGH} AND payload IS NOT NULL"
    rows = spool.db.execute(f"SELECT seq, payload FROM vouchers WHERE {where} ORDER BY seq LIMIT ?", (from_seq, through, limit)).fetchall()
    available = spool.db.execute(f"SELECT count(*) FROM vouchers WHERE {where}", (from_seq, through)).fetchone()[0]
    return [(seq, bytes(payload)) for seq, payload in rows], (through - from_seq + 1) - available


def voucher_span(spool: Spool, seq: int) -> tuple[list[str], int, int] | None:
    """Return the machines and time span voucher ``seq`` covers, acknowledged or not; None once it is pruned."""
    row = spool.db.execute("SELECT machines, start_ms, end_ms FROM vouchers WHERE seq = ?", (seq,)).fetchone()
    return (json.loads(row[0]), row[1], row[2]) if row else None
