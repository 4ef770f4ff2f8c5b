"""Provisioning from one file: a tenant, its sites, gateways with their public keys, and contracts.

`valuegate cloud admin apply PLAN.yaml` applies the whole file in one
transaction, so an error anywhere leaves the database as it was. Applying
the same file again changes nothing. What exists and matches the file is
reported as unchanged. What exists but differs from the file is an error
naming the object, the field and both values, because apply never renames
or moves anything. The format is in docs/cloud.md::

    tenant: acme
    name: ACME Bottling          # needed only when the tenant is new
    sites:
      - id: plant1
        time_zone: Asia/Shanghai
        gateways:
          - id: gw-1
            key: keys/gw-1.json  # `valuegate keys export-public` output, or a z6Mk... key
    contracts: [contracts/acme-l1.yaml]

Relative paths are read from the plan file's folder.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import yaml

from valuegate.edge.protocol.contract import ContractError, parse_contract_text

from . import contracts, store
from .store import Conflict, Conn, Invalid, NotFound, StoreError

__all__ = ("Plan", "Step", "load_plan", "apply_plan")


class GatewayPlan(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    name: str = ""
    key: str | None = None


class SitePlan(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    time_zone: str
    name: str = ""
    gateways: list[GatewayPlan] = []


class Plan(msgspec.Struct, forbid_unknown_fields=True):
    tenant: str
    name: str = ""
    sites: list[SitePlan] = []
    contracts: list[str] = []


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key written twice in one mapping, which PyYAML would otherwise take silently."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is written twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


@dataclass(frozen=True, slots=True)
class Step:
    """One object of the plan and what applying it did: ``created`` or ``unchanged``."""

    kind: str
    name: str
    action: str


def load_plan(path: Path) -> Plan:
    """Read and check a plan file; raise Invalid naming the file, the field and the value."""
    try:
        with path.open(encoding="utf-8") as stream:  # PyYAML names the stream's file in its messages
            data = yaml.load(stream, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except FileNotFoundError as exc:
        raise Invalid(f"plan file not found: {path}; check the path, or write the plan as docs/cloud.md shows", code="invalid_plan") from exc
    except OSError as exc:
        raise Invalid(f"cannot read the plan {path}: {exc.strerror}", code="invalid_plan") from exc
    except yaml.YAMLError as exc:
        raise Invalid(_yaml_problem(path, exc), code="invalid_plan") from exc
    try:
        plan = msgspec.convert(data, Plan)
    except msgspec.ValidationError as exc:
        raise Invalid(f"{path}: {exc}; see the plan format in docs/cloud.md", code="invalid_plan") from exc
    ids = [gateway.id for site in plan.sites for gateway in site.gateways]
    if repeated := sorted({gateway for gateway in ids if ids.count(gateway) > 1}):
        raise Invalid(f"{path}: gateway {repeated[0]!r} is listed more than once; list each gateway under one site", code="invalid_plan")
    return plan


def _yaml_problem(path: Path, exc: yaml.YAMLError) -> str:
    """Describe a YAML error of the plan in one line: the file, the line and column (counted from 1), and what is wrong there."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(path)
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None:
        problem += f" ({context} at line {context_mark.line + 1}, column {context_mark.column + 1})"
    return f"{where}: the plan is not valid YAML: {problem}; correct the plan there (its format is in docs/cloud.md)"


async def apply_plan(conn: Conn, plan: Plan, base: Path, *, actor: str = "admin") -> list[Step]:
    """Create what the plan lists and is missing, check what exists; the caller runs this in one transaction.

    An error from the store is raised again with the plan entry it came from.
    """
    steps = [await _tenant(conn, plan, actor)]
    for site in plan.sites:
        steps.append(await _site(conn, plan.tenant, site, actor))
        for gateway in site.gateways:
            where = f"site {site.id!r}, gateway {gateway.id!r}"
            steps.append(await _located(where, _gateway(conn, plan.tenant, site.id, gateway, actor)))
            if gateway.key is not None:
                steps.append(await _located(where, _key(conn, plan.tenant, gateway.id, gateway.key, base, actor)))
    for name in plan.contracts:
        steps.append(await _contract(conn, plan.tenant, base / name, name, actor))
    return steps


async def _contract(conn: Conn, tenant: str, path: Path, name: str, actor: str) -> Step:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise Invalid(f"contract file not found: {path}; check the path in the plan's contracts list, which starts at the plan's folder",
                      code="invalid_plan") from exc
    except OSError as exc:
        raise Invalid(f"cannot read contract file {path}: {exc.strerror}; check the path in the plan's contracts list", code="invalid_plan") from exc
    try:
        contract = parse_contract_text(text, file=str(path))
    except ContractError as exc:
        raise Invalid(str(exc), code="invalid_contract") from exc
    try:
        stored = await contracts.get_contract(conn, tenant, contract.id)
    except NotFound:
        await contracts.upload_contract(conn, tenant, text, actor=actor)
        return Step("contract", f"{contract.id} ({name})", "created")
    if stored["sha256"] != "sha256:" + hashlib.sha256(text.encode()).hexdigest():
        raise Invalid(
            f"contract {contract.id!r} is in force as revision {stored['revision']} with another text than {path}; apply never replaces a "
            f"contract, so upload a new revision on purpose with `valuegate cloud admin contract-upload {tenant} {path}`, "
            "or put the text in force into the plan's file",
            code="plan_differs",
        )
    return Step("contract", f"{contract.id} ({name})", "unchanged")


async def _located(where: str, step: Awaitable[Step]) -> Step:
    try:
        return await step
    except StoreError as exc:
        raise type(exc)(f"{where}: {exc}", code=exc.code) from exc


async def _tenant(conn: Conn, plan: Plan, actor: str) -> Step:
    try:
        tenant = await store.get_tenant(conn, plan.tenant)
    except NotFound:
        if not plan.name:
            raise Invalid(f"tenant {plan.tenant!r} does not exist; add its display name as `name:` to the plan to create it", code="invalid_plan") from None
        await store.create_tenant(conn, plan.tenant, plan.name, actor=actor)
        return Step("tenant", plan.tenant, "created")
    _same("tenant", plan.tenant, "name", tenant["name"], plan.name)
    return Step("tenant", plan.tenant, "unchanged")


async def _site(conn: Conn, tenant: str, site: SitePlan, actor: str) -> Step:
    try:
        ZoneInfo(site.time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise Invalid(f"site {site.id!r}: time zone {site.time_zone!r} is not an IANA zone name such as 'Asia/Shanghai'", code="invalid_plan") from None
    try:
        row = await store.get_site(conn, tenant, site.id)
    except NotFound:
        await store.create_site(conn, tenant, site.id, site.name or site.id, site.time_zone, actor=actor)
        return Step("site", site.id, "created")
    _same("site", site.id, "time_zone", row["time_zone"], site.time_zone)
    _same("site", site.id, "name", row["name"], site.name)
    return Step("site", site.id, "unchanged")


async def _gateway(conn: Conn, tenant: str, site_id: str, gateway: GatewayPlan, actor: str) -> Step:
    try:
        row = await store.get_gateway(conn, tenant, gateway.id)
    except NotFound:
        try:
            await store.create_gateway(conn, tenant, site_id, gateway.id, gateway.name, actor=actor)
        except Conflict as exc:
            if exc.code != "gateway_exists":
                raise
            # This tenant has no gateway of that id, so another tenant has it. The message does not name that tenant, as the store's does not.
            raise Conflict(
                f"gateway id {gateway.id!r} belongs to another tenant, and gateway ids are unique across tenants; choose another id for this gateway",
                code="gateway_exists",
            ) from exc
        return Step("gateway", f"{gateway.id} (site {site_id})", "created")
    _same("gateway", gateway.id, "site", row["site_id"], site_id)
    _same("gateway", gateway.id, "name", row["name"], gateway.name)
    return Step("gateway", f"{gateway.id} (site {site_id})", "unchanged")


async def _key(conn: Conn, tenant: str, gateway_id: str, value: str, base: Path, actor: str) -> Step:
    public_key, created = _public_key(value, base, gateway_id, tenant)
    multibase = public_key.removeprefix("did:key:").partition("#")[0]
    rows = await store.list_gateway_keys(conn, tenant, gateway_id)
    if multibase in {row["public_key"] for row in rows}:
        return Step("key", f"{gateway_id} {multibase[:16]}...", "unchanged")
    if active := [row for row in rows if row["revoked_at"] is None]:
        ids = ", ".join(str(row["id"]) for row in active)
        raise Invalid(
            f"gateway {gateway_id!r} already has key(s) {ids} in force and the plan names another key ({value}); apply never adds a "
            f"second key: register a rotation with `valuegate cloud admin key-rotate`, or revoke the old key with "
            f"`valuegate cloud admin key-revoke {tenant} {gateway_id} KEY_ID --reason ...` first",
            code="plan_differs",
        )
    await store.add_gateway_key(conn, tenant, gateway_id, public_key, valid_from=created, actor=actor)
    return Step("key", f"{gateway_id} {multibase[:16]}...", "created")


def _public_key(value: str, base: Path, gateway_id: str, tenant: str) -> tuple[str, dt.datetime | None]:
    """Return the key and its creation time from an export-public file, or the key written in the plan (valid from now)."""
    if value.startswith(("z6Mk", "did:key:")):
        return value, None
    path = base / value
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise Invalid(
            f"key file not found: {path}; check the gateway's key path in the plan, which starts at the plan's folder, or write the file "
            "on the gateway with `valuegate keys export-public -c edge.yaml` and copy it there",
            code="invalid_plan",
        ) from exc
    except OSError as exc:
        raise Invalid(f"cannot read key file {path}: {exc.strerror}; check the key path in the plan", code="invalid_plan") from exc
    except ValueError as exc:
        raise Invalid(f"key file {path} is not `valuegate keys export-public` JSON: {exc}", code="invalid_plan") from exc
    method = data.get("verification_method") if isinstance(data, dict) else None
    if not isinstance(method, str):
        raise Invalid(f"key file {path} has no verification_method; write it with `valuegate keys export-public -c edge.yaml`", code="invalid_plan")
    for field, expected in (("gateway", gateway_id), ("tenant", tenant)):
        if data.get(field) not in (None, expected):
            raise Invalid(f"key file {path} is the key of {field} {data[field]!r}, listed under {field} {expected!r}; check the plan", code="invalid_plan")
    created = data.get("created")
    try:
        stamp = dt.datetime.fromisoformat(created.replace("Z", "+00:00")) if isinstance(created, str) else None
    except ValueError as exc:
        raise Invalid(f"key file {path}: created {created!r} is not an ISO 8601 time", code="invalid_plan") from exc
    return method, stamp


def _same(kind: str, name: str, field: str, stored: Any, planned: Any) -> None:
    """Raise Invalid when the plan differs from what is stored. An empty planned value means 'as stored'."""
    if planned not in ("", None) and stored != planned:
        raise Invalid(
            f"{kind} {name!r} exists with {field} {stored!r}, but the plan has {planned!r}; "
            f"change the plan to {stored!r}, because apply creates objects but never changes them",
            code="plan_differs",
        )
