"""Voucher storage with the per-gateway hash chain: idempotency, forks, links, gaps and the ack position.

One call stores a batch of checked or pending vouchers in the caller's
transaction, verifying each pending one as its turn comes.
Per-gateway advisory locks make the chain checks exact even when workers
receive a gateway's vouchers out of order. Every batch takes its locks in
sorted gateway order, so two workers cannot deadlock on them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec
import psycopg

from valuegate.edge.protocol.voucher import MachineRef, VoucherError

from .verify import CheckedVoucher, GatewayInfo, KeyInfo, PendingVoucher, Topic, signed_claims

__all__ = ("ChainPosition", "StoreResult", "load_gateways", "store_vouchers", "store_rejections", "rejection_hints", "advance_chain", "advance_chains", "chain_positions", "count_gap_gateways", "touch_contracts")

Conn = psycopg.AsyncConnection[Any]


@dataclass(frozen=True, slots=True)
class ChainPosition:
    """How far a gateway's chain is stored: every sequence up to ``stored_through``, and the highest seen."""

    gateway_id: str
    stored_through: int
    highest_seq: int

    @property
    def gap(self) -> bool:
        return self.highest_seq > self.stored_through


@dataclass(slots=True)
class StoreResult:
    """Outcome of one batch: voucher ids stored, duplicates, rejections by index, chain positions touched."""

    stored: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    rejected: dict[int, VoucherError] = field(default_factory=dict)
    positions: dict[str, ChainPosition] = field(default_factory=dict)


async def load_gateways(conn: Conn, gateway_ids: set[str]) -> dict[str, GatewayInfo]:
    """Load the registry entries (site time zone and keys) of the given gateways."""
    if not gateway_ids:
        return {}
    cur = await conn.execute(
        "SELECT g.id, g.tenant_id, g.site_id, s.time_zone, k.id, k.public_key, k.valid_from, k.valid_until, k.revoked_at, k.from_seq, k.until_seq "
        "FROM gateways g JOIN sites s ON s.tenant_id = g.tenant_id AND s.id = g.site_id "
        "LEFT JOIN gateway_keys k ON k.gateway_id = g.id WHERE g.id = ANY(%s)",
        (list(gateway_ids),),
    )
    found: dict[str, tuple[tuple[str, str, str], list[KeyInfo]]] = {}
    for gid, tenant, site, zone, key_id, *key in await cur.fetchall():
        entry = found.setdefault(gid, ((tenant, site, zone), []))
        if key_id is not None:
            entry[1].append(KeyInfo(key_id, *key))
    return {gid: GatewayInfo(gid, *where, tuple(keys)) for gid, (where, keys) in found.items()}


def _decimal(value: float | None) -> Decimal | None:
    # repr() is the shortest text that reads back as the same float, which is what the JSON held.
    return None if value is None else Decimal(repr(value))


def _voucher_row(item: CheckedVoucher, site_id: str) -> tuple[Any, ...]:
    claims = item.claims
    return (
        claims.voucher_id, claims.tenant, site_id, claims.gateway, claims.seq, claims.contract, claims.anchor,
        item.period_start, item.period_end, dt.date.fromisoformat(claims.period.plant_date), claims.metric.name, claims.delta.quantity,
        _decimal(claims.delta.point), _decimal(claims.delta.low), _decimal(claims.delta.high),
        _decimal(claims.reporting.value), _decimal(claims.baseline.value), claims.reporting.running_day,
        claims.sufficiency.ok, claims.evidence.merkle_root, claims.evidence.records, item.issued_at,
        item.document["issuer"], item.payload,
    )  # fmt: skip


# Binary COPY: the per-gateway locks and the existence check below make a conflict impossible.
_COPY_VOUCHERS = (
    "COPY vouchers (voucher_id, tenant_id, site_id, gateway_id, seq, contract_id, anchor_id, period_start, period_end,"
    " plant_date, metric, quantity, delta_point, delta_low, delta_high, reporting_value, baseline_value, running_day,"
    " sufficient, evidence_root, evidence_records, issued_at, issuer, document) FROM STDIN (FORMAT BINARY)"
)
# The document is stored as received. The binary form of json is its text, so the payload bytes go
# out unchanged under the bytea dumper, and the server checks them as JSON on the way in.
_VOUCHER_TYPES = ["text", "text", "text", "text", "int8", "text", "text", "timestamptz", "timestamptz", "date", "text", "text",
                  "numeric", "numeric", "numeric", "numeric", "numeric", "bool", "bool", "text", "int4", "timestamptz", "text", "bytea"]  # fmt: skip
_COPY_CHAIN = (
    "COPY voucher_chain (gateway_id, seq, voucher_id, tenant_id, contract_id, anchor_id, hash, prev, period_start)"
    " FROM STDIN (FORMAT BINARY)"
)
_CHAIN_TYPES = ["text", "int8", "text", "text", "text", "text", "text", "text", "timestamptz"]


async def _lock_gateways(conn: Conn, gateway_ids: list[str]) -> None:
    # One statement takes the locks one after another in sorted order.
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext('valuegate.chain'), hashtext(g)) FROM (SELECT unnest(%s::text[]) AS g ORDER BY 1) AS s",
        (sorted(gateway_ids),),
    )


async def _known_links(conn: Conn, wanted: set[tuple[str, int]]) -> dict[tuple[str, int], tuple[str, str | None]]:
    if not wanted:
        return {}
    gateways, seqs = zip(*wanted, strict=True)
    cur = await conn.execute(
        "SELECT c.gateway_id, c.seq, c.hash, c.prev FROM voucher_chain c"
        " JOIN unnest(%s::text[], %s::bigint[]) AS k(gateway_id, seq) ON c.gateway_id = k.gateway_id AND c.seq = k.seq",
        (list(gateways), list(seqs)),
    )
    return {(gid, seq): (digest, prev) for gid, seq, digest, prev in await cur.fetchall()}


def _link_error(item: CheckedVoucher, known: dict[tuple[str, int], tuple[str, str | None]]) -> VoucherError | None:
    claims = item.claims
    gid, seq, vid = claims.gateway, claims.seq, claims.voucher_id
    if seq == 1 and claims.prev is not None:
        return VoucherError("chain_mismatch", f"voucher {vid} is the first of its chain but names prev {claims.prev}", voucher_id=vid)
    before = known.get((gid, seq - 1))
    if before is not None and claims.prev != before[0]:
        msg = f"voucher {vid} names prev {claims.prev} but the stored voucher {gid}:{seq - 1} hashes to {before[0]}"
        return VoucherError("chain_mismatch", msg, voucher_id=vid)
    after = known.get((gid, seq + 1))
    if after is not None and after[1] != item.hash:
        msg = f"voucher {vid} hashes to {item.hash} but the stored voucher {gid}:{seq + 1} names prev {after[1]}"
        return VoucherError("chain_mismatch", msg, voucher_id=vid)
    return None


# ``h.through`` is a position the caller knows to be contiguous (at least the old one), so the
# walk over stored sequences starts there instead of at the old position.
_ADVANCE = """
UPDATE gateway_chain AS g SET
    contiguous_through = CASE
        WHEN EXISTS (SELECT 1 FROM voucher_chain c WHERE c.gateway_id = g.gateway_id AND c.seq = h.through + 1)
        -- The run that starts right after h.through ends at the first stored seq whose successor is missing.
        THEN (SELECT min(c.seq) FROM voucher_chain c
              WHERE c.gateway_id = g.gateway_id AND c.seq > h.through
                AND NOT EXISTS (SELECT 1 FROM voucher_chain n WHERE n.gateway_id = c.gateway_id AND n.seq = c.seq + 1))
        ELSE h.through
    END,
    highest_seq = coalesce((SELECT max(c.seq) FROM voucher_chain c WHERE c.gateway_id = g.gateway_id), 0),
    updated_at = now()
FROM unnest(%s::text[], %s::bigint[]) AS h(gateway_id, through)
WHERE g.gateway_id = h.gateway_id
RETURNING g.gateway_id, g.contiguous_through, g.highest_seq
"""


async def touch_contracts(conn: Conn, contracts: set[tuple[str, str]]) -> None:
    """Bump the change counter of each ``(tenant, contract)``; reports recompute when it moves."""
    if not contracts:
        return
    tenants, ids = zip(*sorted(contracts), strict=True)
    await conn.execute(
        "INSERT INTO contract_activity (tenant_id, contract_id) SELECT * FROM unnest(%s::text[], %s::text[])"
        " ON CONFLICT (tenant_id, contract_id) DO UPDATE SET version = contract_activity.version + 1, changed_at = now()",
        (list(tenants), list(ids)),
    )


async def advance_chains(conn: Conn, gateway_ids: list[str], stored: Container[tuple[str, int]] = ()) -> dict[str, ChainPosition]:
    """Move each gateway's stored-through position over every contiguous stored sequence and return the positions.

    ``stored`` may contain ``(gateway, seq)`` pairs known to be stored. The
    walk then starts after the run of them that follows the old position.
    The contracts of the vouchers that the move brings out of a gap are touched.
    """
    if not gateway_ids:
        return {}
    await conn.execute("INSERT INTO gateway_chain (gateway_id) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING", (gateway_ids,))
    cur = await conn.execute("SELECT gateway_id, contiguous_through FROM gateway_chain WHERE gateway_id = ANY(%s)", (gateway_ids,))
    before: dict[str, int] = dict(await cur.fetchall())
    through = []
    for gid in gateway_ids:
        seq = before[gid]
        while (gid, seq + 1) in stored:
            seq += 1
        through.append(seq)
    cur = await conn.execute(_ADVANCE, (gateway_ids, through))
    positions = {gid: ChainPosition(gid, position, highest) for gid, position, highest in await cur.fetchall()}
    moved = [(gid, before[gid], pos.stored_through) for gid, pos in positions.items() if pos.stored_through > before[gid]]
    if moved:
        gids, lows, highs = zip(*moved, strict=True)
        cur = await conn.execute(
            "SELECT DISTINCT c.tenant_id, c.contract_id FROM voucher_chain c"
            " JOIN unnest(%s::text[], %s::bigint[], %s::bigint[]) AS m(gateway_id, low, high)"
            " ON c.gateway_id = m.gateway_id AND c.seq > m.low AND c.seq <= m.high",
            (list(gids), list(lows), list(highs)),
        )
        await touch_contracts(conn, set(await cur.fetchall()))
    return positions


async def chain_positions(conn: Conn, gateway_ids: list[str]) -> dict[str, ChainPosition]:
    """Read the stored positions of the gateways, without moving them."""
    cur = await conn.execute("SELECT gateway_id, contiguous_through, highest_seq FROM gateway_chain WHERE gateway_id = ANY(%s)", (gateway_ids,))
    return {gid: ChainPosition(gid, through, highest) for gid, through, highest in await cur.fetchall()}


async def count_gap_gateways(conn: Conn) -> int:
    """Return how many gateways have a stored sequence above their contiguous run, whichever process stored it."""
    row = await (await conn.execute("SELECT count(*) FROM gateway_chain WHERE highest_seq > contiguous_through")).fetchone()
    return row[0] if row else 0


async def advance_chain(conn: Conn, gateway_id: str) -> ChainPosition:
    """Move one gateway's stored-through position and return it."""
    return (await advance_chains(conn, [gateway_id]))[gateway_id]


async def store_vouchers(conn: Conn, items: Sequence[CheckedVoucher | PendingVoucher], gateways: dict[str, GatewayInfo]) -> StoreResult:
    """Store vouchers in the caller's transaction: same content again is a no-op, other content at a stored sequence is a fork.

    A pending voucher is verified here, in arrival order, while the rows
    accepted before it stream to the server. One whose proof fails lands in
    ``rejected`` with code ``signature_invalid`` and stores nothing.
    """
    result = StoreResult()
    await _lock_gateways(conn, sorted({item.claims.gateway for item in items}))
    wanted = {(item.claims.gateway, item.claims.seq + step) for item in items for step in (-1, 0, 1)}
    known = await _known_links(conn, wanted)
    chain_rows: list[tuple[Any, ...]] = []
    machines: dict[tuple[str, str], tuple[str, MachineRef]] = {}
    checked_gateways: set[str] = set()
    contracts: set[tuple[str, str]] = set()
    async with conn.cursor() as cur:
        async with contextlib.AsyncExitStack() as stack:
            copy = None
            # Arrival order decides which of two conflicting vouchers is stored first, as it would across batches.
            for index, pending in enumerate(items):
                try:
                    item = pending.check()
                except VoucherError as exc:
                    result.rejected[index] = exc
                    continue
                claims = item.claims
                checked_gateways.add(claims.gateway)
                existing = known.get((claims.gateway, claims.seq))
                if existing is not None:
                    if existing[0] == item.hash:
                        result.duplicates.append(claims.voucher_id)
                    else:
                        msg = f"sequence {claims.seq} of gateway {claims.gateway!r} is stored with hash {existing[0]}; this voucher hashes to {item.hash}"
                        result.rejected[index] = VoucherError("fork", msg, voucher_id=claims.voucher_id)
                    continue
                error = _link_error(item, known)
                if error is not None:
                    result.rejected[index] = error
                    continue
                known[(claims.gateway, claims.seq)] = (item.hash, claims.prev)
                site_id = gateways[claims.gateway].site_id
                chain_rows.append(
                    (claims.gateway, claims.seq, claims.voucher_id, claims.tenant, claims.contract, claims.anchor, item.hash, claims.prev, item.period_start)
                )
                for machine in claims.machines:
                    machines[(claims.tenant, machine.id)] = (site_id, machine)
                contracts.add((claims.tenant, claims.contract))
                result.stored.append(claims.voucher_id)
                if copy is None:
                    copy = await stack.enter_async_context(cur.copy(_COPY_VOUCHERS))
                    copy.set_types(_VOUCHER_TYPES)
                await copy.write_row(_voucher_row(item, site_id))
        if chain_rows:
            async with cur.copy(_COPY_CHAIN) as copy:
                copy.set_types(_CHAIN_TYPES)
                for row in chain_rows:
                    await copy.write_row(row)
        if machines:
            await cur.executemany(
                "INSERT INTO machines (tenant_id, id, site_id, mapping_hash, time_source, ideal_cycle_time_s) VALUES (%s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (tenant_id, id) DO UPDATE SET site_id = excluded.site_id, mapping_hash = excluded.mapping_hash,"
                " time_source = excluded.time_source, ideal_cycle_time_s = excluded.ideal_cycle_time_s, updated_at = now()"
                " WHERE (machines.mapping_hash, machines.time_source, machines.ideal_cycle_time_s, machines.site_id)"
                " IS DISTINCT FROM (excluded.mapping_hash, excluded.time_source, excluded.ideal_cycle_time_s, excluded.site_id)",
                sorted((tenant, machine_id, site_id, ref.mapping_hash, ref.time_source, ref.ideal_cycle_time_s)
                       for (tenant, machine_id), (site_id, ref) in machines.items()),  # fmt: skip
            )
    await touch_contracts(conn, contracts)
    result.positions = await advance_chains(conn, sorted(checked_gateways), known)
    return result


async def store_rejections(conn: Conn, rows: list[tuple[Any, ...]]) -> None:
    """Store rejection rows ``(kind, topic, tenant, gateway, voucher_id, contract, code, reason, sha256, size, payload)``.

    A payload rejected again for the same code on the same topic adds to the
    existing row's ``received_count`` and moves its ``last_received_at``. The
    row takes the new reason and keeps a voucher id and contract found before.
    ``ON CONFLICT`` lets ingest workers store the same repeat concurrently, and
    the rows go in one order, so two batches never lock each other's rows in
    reverse order.
    """
    if not rows:
        return
    await touch_contracts(conn, {(row[2], row[5]) for row in rows if row[2] is not None and row[5] is not None})
    # Repeats within the batch become one row with their count, and the last one's reason and hints.
    merged: dict[tuple[str, str, str], tuple[tuple[Any, ...], int]] = {}
    for row in rows:
        key = (row[8], row[6], row[1])
        _, count = merged.get(key, (row, 0))
        merged[key] = (row, count + 1)
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO rejections (kind, topic, tenant_id, gateway_id, voucher_id, contract_id, code, reason, payload_sha256, payload_size, payload,"
            " received_count) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (payload_sha256, code, md5(topic)) DO UPDATE SET received_count = rejections.received_count + excluded.received_count,"
            " last_received_at = excluded.last_received_at, reason = excluded.reason,"
            " voucher_id = coalesce(excluded.voucher_id, rejections.voucher_id), contract_id = coalesce(excluded.contract_id, rejections.contract_id)",
            [(*row, count) for _, (row, count) in sorted(merged.items(), key=lambda item: item[0])],
        )


def rejection_hints(payload: bytes, topic: Topic | None, gateways: dict[str, GatewayInfo], *, now: dt.datetime) -> tuple[str | None, str | None]:
    """Return the voucher id and contract to store with a rejected voucher payload; None where it names none that can be trusted.

    The contract comes only from claims signed by an unrevoked key of the
    topic's gateway (:func:`~valuegate.cloud.verify.signed_claims`), such as a
    fork, so that no one else can add rejections to a contract's value and
    findings. The voucher id, kept for operators, is dropped when it names
    another gateway than the topic, because the row is shown to the topic's tenant.
    """
    try:
        subject = msgspec.json.decode(payload).get("credentialSubject", {})
        vid = subject.get("voucher_id")
    except (msgspec.DecodeError, AttributeError):
        return None, None
    if not isinstance(vid, str) or (topic is not None and vid.rpartition(":")[0] != topic.gateway):
        vid = None
    claims = signed_claims(payload, topic, gateways, now=now) if topic is not None else None
    return vid, claims.contract if claims is not None else None
