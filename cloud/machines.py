"""Machine ownership: the one gateway whose telemetry measures each machine id of a tenant.

Telemetry is stored per tenant, machine and minute, so two gateways that
report one machine id would mix their records, and the second gateway's
vouchers would be recomputed from the first one's minutes. The first gateway
whose records of a machine are stored owns the machine. Records of it from any
other gateway are rejected (code ``machine_owned``), and vouchers of another
gateway that cover it are marked not reproduced with a detail naming the owner.
An administrator moves a machine to another gateway, for example when a
gateway box is replaced by one with a new id, with ``cloud admin machine-move``.
"""

from __future__ import annotations

from typing import Any

import msgspec
import psycopg

from . import store
from .telemetry import CheckedBatch

__all__ = ("claim_machines", "drop_foreign_records", "foreign_machines", "move_machine")

Conn = psycopg.AsyncConnection[Any]


async def claim_machines(conn: Conn, batches: list[CheckedBatch]) -> dict[tuple[str, str], str]:
    """Make the sending gateway the owner of each machine that has none yet; return the owner of every machine in ``batches``."""
    wanted = sorted({(item.gateway.tenant_id, record.machine, item.gateway.gateway_id) for item in batches for record in item.batch.records})
    if not wanted:
        return {}
    tenants, machines, gateways = (list(column) for column in zip(*wanted, strict=True))
    # Rows go in in key order, so concurrent batches of two workers wait on each other's keys in the same order and do not deadlock.
    await conn.execute(
        "INSERT INTO machine_owners (tenant_id, machine_id, gateway_id)"
        " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]) AS u(t, m, g) ORDER BY t, m, g ON CONFLICT DO NOTHING",
        (tenants, machines, gateways),
    )
    cur = await conn.execute(
        "SELECT tenant_id, machine_id, gateway_id FROM machine_owners"
        " WHERE (tenant_id, machine_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
        (tenants, machines),
    )
    return {(tenant, machine): gateway for tenant, machine, gateway in await cur.fetchall()}


def drop_foreign_records(batches: list[CheckedBatch], owners: dict[tuple[str, str], str]) -> dict[int, str]:
    """Remove from ``batches`` the records of machines another gateway owns; return the reason per batch index."""
    reasons: dict[int, str] = {}
    for index, item in enumerate(batches):
        tenant, sender = item.gateway.tenant_id, item.gateway.gateway_id
        foreign = {record.machine: owners[(tenant, record.machine)] for record in item.batch.records if owners[(tenant, record.machine)] != sender}
        if not foreign:
            continue
        kept = [record for record in item.batch.records if record.machine not in foreign]
        batches[index] = CheckedBatch(msgspec.structs.replace(item.batch, records=kept), item.gateway)
        clashes = ", ".join(f"{machine!r} (owned by gateway {owner!r})" for machine, owner in sorted(foreign.items()))
        reasons[index] = (
            f"records of machine {clashes} from gateway {sender!r} were not stored, because each machine id of tenant {tenant!r} "
            f"has one source; give the machine a tenant-unique id in the tag map, or move it with "
            f"`valuegate cloud admin machine-move {tenant} MACHINE {sender}`"
        )
    return reasons


async def foreign_machines(conn: Conn, tenant_id: str, gateway_id: str, machines: list[str]) -> dict[str, str]:
    """Return the machines of ``machines`` that a gateway other than ``gateway_id`` owns, with that owner."""
    cur = await conn.execute(
        "SELECT machine_id, gateway_id FROM machine_owners WHERE tenant_id = %s AND machine_id = ANY(%s) AND gateway_id <> %s",
        (tenant_id, machines, gateway_id),
    )
    return dict(await cur.fetchall())


async def move_machine(conn: Conn, tenant_id: str, machine_id: str, gateway_id: str, *, actor: str = "admin") -> dict[str, Any]:
    """Make ``gateway_id`` the owner of a machine, in the caller's transaction, and audit the move; return the old and new owner."""
    cur = await conn.execute("SELECT tenant_id FROM gateways WHERE id = %s", (gateway_id,))
    row = await cur.fetchone()
    if row is None or row[0] != tenant_id:
        raise store.NotFound(f"gateway {gateway_id!r} is not registered under tenant {tenant_id!r}; register it with `cloud admin gateway-create` first")
    cur = await conn.execute("SELECT gateway_id FROM machine_owners WHERE tenant_id = %s AND machine_id = %s FOR UPDATE", (tenant_id, machine_id))
    previous = await cur.fetchone()
    await conn.execute(
        "INSERT INTO machine_owners (tenant_id, machine_id, gateway_id) VALUES (%s, %s, %s)"
        " ON CONFLICT (tenant_id, machine_id) DO UPDATE SET gateway_id = EXCLUDED.gateway_id, claimed_at = now()",
        (tenant_id, machine_id, gateway_id),
    )
    moved = {"machine": machine_id, "from_gateway": previous[0] if previous else None, "to_gateway": gateway_id}
    await store.audit(conn, tenant_id=tenant_id, actor=actor, action="machine.move", object_type="machine", object_id=machine_id, detail=moved)
    return moved
