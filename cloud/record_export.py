"""Export of stored minute records: the records an auditor needs to rebuild a contract's evidence roots and baselines."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import msgspec
import psycopg

from valuegate.edge.protocol.contract import Contract

from .bundle import record_names
from .bundle_writer import BundleWriter
from .recompute import baseline_span, minute_instant
from .reproduce import load_records
from .signature import canonical_fast
from .store import NotFound

__all__ = ("record_spans", "write_contract_records", "voucher_records")

Conn = psycopg.AsyncConnection[Any]
Span = tuple[dt.datetime, dt.datetime]


def record_spans(contract: Contract, documents: Iterable[Mapping[str, Any]]) -> dict[str, list[Span]]:
    """Return, per machine, the merged UTC spans of the contract's vouchers' periods and of their anchors' baseline periods.

    Vouchers of other contracts (a bundle carries every voucher of a chain in between) add nothing.
    """
    spans: dict[str, list[Span]] = defaultdict(list)
    anchors = {anchor.id: anchor for anchor in contract.anchors}
    for document in documents:
        subject = document.get("credentialSubject", {})
        if subject.get("contract") != contract.id:
            continue
        period = subject["period"]
        machines = [machine["id"] for machine in subject["machines"]]
        needed = [(minute_instant(period["start"]), minute_instant(period["end"]))]
        anchor = anchors.get(subject.get("anchor"))
        if anchor is not None:
            needed.append(baseline_span(anchor, period["time_zone"]))
        for machine in machines:
            spans[machine] += needed
    return {machine: _merge(items) for machine, items in spans.items()}


def _merge(spans: list[Span]) -> list[Span]:
    merged: list[Span] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


# Records fetched and written per query: a week of one machine, about 2.3 MB of canonical lines.
_CHUNK = dt.timedelta(days=7)


async def write_contract_records(
    conn: Conn, tenant_id: str, contract: Contract, documents: Iterable[Mapping[str, Any]], writer: BundleWriter
) -> AsyncIterator[str]:
    """Write the stored records, per machine and in time order, that the contract's vouchers and their baselines were computed from.

    Each machine's records are fetched a week at a time and compressed as
    they come, so the whole set never sits in memory. A machine without any
    stored record in those periods gets no file, so a cloud that stored no
    telemetry builds a bundle without records. Yields each record file's
    name once it is closed, when a streaming caller can take its bytes.
    """
    spans = record_spans(contract, documents)
    names = record_names(sorted(spans))
    for machine, name in names.items():
        if not await _has_records(conn, tenant_id, machine, spans[machine]):
            continue
        with writer.record_file(machine, name) as file:
            for start, end in spans[machine]:
                while start < end:
                    stop = min(start + _CHUNK, end)
                    records = await load_records(conn, tenant_id, [machine], start, stop)
                    file.write([canonical_fast(msgspec.to_builtins(record)) for record in records])
                    start = stop
        yield name


async def _has_records(conn: Conn, tenant_id: str, machine: str, spans: list[Span]) -> bool:
    for start, end in spans:
        cur = await conn.execute(
            "SELECT 1 FROM telemetry WHERE tenant_id = %s AND machine_id = %s AND minute >= %s AND minute < %s LIMIT 1", (tenant_id, machine, start, end)
        )
        if await cur.fetchone() is not None:
            return True
    return False


async def voucher_records(conn: Conn, tenant_id: str, voucher_id: str) -> tuple[bytes, int]:
    """Return the stored records of one voucher's machines and period, one RFC 8785 record a line, and their count.

    The lines come in the order the voucher's evidence root covers them: by
    machine id in code-point order, then by minute. Raises NotFound for a
    voucher the tenant does not have.
    """
    cur = await conn.execute(
        "SELECT document -> 'credentialSubject' -> 'machines', period_start, period_end FROM vouchers WHERE tenant_id = %s AND voucher_id = %s",
        (tenant_id, voucher_id),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"voucher {voucher_id!r} not found")
    machines, start, end = row
    records = await load_records(conn, tenant_id, sorted(machine["id"] for machine in machines), start, end)
    return b"".join(canonical_fast(msgspec.to_builtins(record)) + b"\n" for record in records), len(records)
