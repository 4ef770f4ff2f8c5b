"""Machine ownership: the one gateway whose telemetry measures each machine id of a tenant at a given time.

Telemetry is stored per tenant, machine and minute, so two gateways that
report one machine id would mix their records, and the second gateway's
vouchers would be recomputed from the first one's minutes. The first gateway
whose records of a machine are stored owns the machine. Records of it from any
other gateway are rejected (code ``machine_owned``), and vouchers of another
gateway that cover it are marked not reproduced with a detail naming the owner.

An administrator moves a machine to another gateway from an instant on, for
example when a gateway box is replaced by one with a new id, with ``cloud
admin machine-move``. Minutes before that instant still belong to the old
gateway, so the backlog it sends after the move is stored, and the verdicts
that ownership decided are computed again.
"""

from __future__ import annotations

import bisect
import datetime as dt
from typing import Any

import msgspec
import psycopg

from . import store
from .telemetry import CheckedBatch

__all__ = ("Owners", "claim_machines", "drop_foreign_records", "foreign_machines", "move_machine")

Conn = psycopg.AsyncConnection[Any]
# The start of the detail a voucher gets when another gateway owns one of its machines.
OWNED_DETAIL = "machine "


class Owners:
    """The owners of some machines over time: per ``(tenant, machine)``, ``(since, gateway)`` in time order."""

    def __init__(self, rows: list[tuple[str, str, dt.datetime, str]]) -> None:
        self._spans: dict[tuple[str, str], tuple[list[str], list[str]]] = {}
        for tenant, machine, since, gateway in sorted(rows, key=lambda row: (row[0], row[1], row[2])):
            starts, gateways = self._spans.setdefault((tenant, machine), ([], []))
            starts.append(_minute_text(since))
            gateways.append(gateway)

    def sole(self, tenant: str, machine: str) -> str | None:
        """Return the gateway when one gateway has owned ``machine`` all along, else None."""
        starts, gateways = self._spans.get((tenant, machine), ([], []))
        return gateways[0] if len(gateways) == 1 else None

    def at(self, tenant: str, machine: str, minute: str) -> str | None:
        """Return the gateway owning ``machine`` at ``minute`` (``YYYY-MM-DDTHH:MM:00Z``), or None before any owner."""
        starts, gateways = self._spans.get((tenant, machine), ([], []))
        index = bisect.bisect_right(starts, minute) - 1
        return gateways[index] if index >= 0 else None

    def during(self, tenant: str, machine: str, start: dt.datetime, end: dt.datetime) -> set[str]:
        """Return every gateway owning ``machine`` at some time in ``[start, end)``."""
        starts, gateways = self._spans.get((tenant, machine), ([], []))
        low, high = _minute_text(start), _minute_text(end)
        return {gateway for index, gateway in enumerate(gateways) if starts[index] < high and (index + 1 == len(starts) or starts[index + 1] > low)}


def _minute_text(stamp: dt.datetime) -> str:
    # The first owner's row starts in year 1 (the column default), before every record's minute.
    if stamp.year == 1:
        return ""
    return stamp.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _load(conn: Conn, tenants: list[str], machines: list[str]) -> Owners:
    cur = await conn.execute(
        "SELECT tenant_id, machine_id, since, gateway_id FROM machine_owners"
        " WHERE (tenant_id, machine_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
        (tenants, machines),
    )
    return Owners(await cur.fetchall())


async def claim_machines(conn: Conn, batches: list[CheckedBatch]) -> Owners:
    """Make the sending gateway the owner of each machine that has none yet; return the owners of every machine in ``batches``."""
    wanted = sorted({(item.gateway.tenant_id, record.machine, item.gateway.gateway_id) for item in batches for record in item.batch.records})
    if not wanted:
        return Owners([])
    tenants, machines, gateways = (list(column) for column in zip(*wanted, strict=True))
    # Rows go in in key order, so concurrent batches of two workers wait on each other's keys in the same order and do not deadlock.
    await conn.execute(
        "INSERT INTO machine_owners (tenant_id, machine_id, gateway_id)"
        " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]) AS u(t, m, g) ORDER BY t, m, g ON CONFLICT DO NOTHING",
        (tenants, machines, gateways),
    )
    return await _load(conn, tenants, machines)


def drop_foreign_records(batches: list[CheckedBatch], owners: Owners) -> dict[int, str]:
    """Remove from ``batches`` the records of machines another gateway owns at their minute; return the reason per batch index."""
    reasons: dict[int, str] = {}
    for index, item in enumerate(batches):
        tenant, sender = item.gateway.tenant_id, item.gateway.gateway_id
        # The usual case, every machine owned by the sender all along, needs no look-up per record.
        if all(owners.sole(tenant, machine) == sender for machine in {record.machine for record in item.batch.records}):
            continue
        foreign: dict[str, str] = {}
        kept = []
        for record in item.batch.records:
            owner = owners.at(tenant, record.machine, record.minute)
            if owner is None or owner == sender:
                kept.append(record)
            else:
                foreign.setdefault(record.machine, owner)
        if not foreign:
            continue
        batches[index] = CheckedBatch(msgspec.structs.replace(item.batch, records=kept), item.gateway)
        reasons[index] = "; ".join(
            f"records of machine {machine!r} from gateway {sender!r} were not stored, because gateway {owner!r} is its source at their "
            f"minutes (each machine id of tenant {tenant!r} has one source at a time); give the machine a tenant-unique id in the tag map, "
            f"or move it with `valuegate cloud admin machine-move {tenant} {machine} {sender} --from <first minute>`"
            for machine, owner in sorted(foreign.items())
        )
    return reasons


async def foreign_machines(conn: Conn, tenant_id: str, gateway_id: str, machines: list[str], start: dt.datetime, end: dt.datetime) -> dict[str, str]:
    """Return the machines of ``machines`` that a gateway other than ``gateway_id`` owns during ``[start, end)``, with that owner."""
    owners = await _load(conn, [tenant_id] * len(machines), machines)
    foreign = {}
    for machine in machines:
        others = sorted(owners.during(tenant_id, machine, start, end) - {gateway_id})
        if others:
            foreign[machine] = others[0]
    return foreign


async def move_machine(
    conn: Conn, tenant_id: str, machine_id: str, gateway_id: str, *, since: dt.datetime | None = None, actor: str = "admin"
) -> dict[str, Any]:
    """Make ``gateway_id`` the source of a machine from ``since`` (default now) on, in the caller's transaction, and audit it.

    Verdicts that ownership decided for the tenant's vouchers are cleared, so the next reproduction pass decides them again.
    Returns the move with the previous source and whether the machine has sent telemetry before.
    """
    cur = await conn.execute("SELECT tenant_id FROM gateways WHERE id = %s", (gateway_id,))
    row = await cur.fetchone()
    if row is None:
        raise store.NotFound(f"gateway {gateway_id!r} is not registered; register it with `cloud admin gateway-create {tenant_id} SITE {gateway_id}` first")
    if row[0] != tenant_id:
        raise store.NotFound(f"gateway {gateway_id!r} belongs to another tenant, not to {tenant_id!r}; a machine can move only between gateways of its tenant")
    since = since or dt.datetime.now(dt.UTC)
    if since.tzinfo is None:
        raise store.Invalid(f"--from {since.isoformat()} has no time zone; give it with an offset such as +08:00 or Z", code="naive_timestamp")
    owners = await _load(conn, [tenant_id], [machine_id])
    previous = owners.at(tenant_id, machine_id, _minute_text(since))
    await conn.execute(
        "INSERT INTO machine_owners (tenant_id, machine_id, since, gateway_id) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (tenant_id, machine_id, since) DO UPDATE SET gateway_id = EXCLUDED.gateway_id, claimed_at = now()",
        (tenant_id, machine_id, since, gateway_id),
    )
    cur = await conn.execute(
        "UPDATE voucher_chain SET reproduced = NULL, reproduced_at = NULL WHERE tenant_id = %s AND reproduced = false"
        " AND reproduce_detail LIKE %s",
        (tenant_id, f"{OWNED_DETAIL}%is measured by gateway%"),
    )
    moved = {"machine": machine_id, "from_gateway": previous, "to_gateway": gateway_id, "since": since.isoformat(), "verdicts_reopened": cur.rowcount}
    await store.audit(conn, tenant_id=tenant_id, actor=actor, action="machine.move", object_type="machine", object_id=machine_id, detail=moved)
    moved["known"] = bool(owners.during(tenant_id, machine_id, dt.datetime.min.replace(tzinfo=dt.UTC), dt.datetime.max.replace(tzinfo=dt.UTC)))
    return moved
