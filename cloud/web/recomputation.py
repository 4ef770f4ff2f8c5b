"""Re-computation findings of the contract page: one localized line per anchor, gateway and cause instead of one per voucher.

The cloud's reproduction (``valuegate.cloud.reproduce``) stores an English
detail for every voucher it could not reproduce, or not yet. This module
recognizes each known detail as a cause, groups the vouchers that share
one, and renders each group from the catalog with the action to take. A
detail it does not recognize is shown as it is under a generic label. The
raw details stay in the group for engineers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from valuegate.edge.protocol.voucher import voucher_id

from .i18n import translate

__all__ = ("Cause", "CauseGroup", "parse_detail", "group_vouchers", "group_text", "voucher_runs")

# The vouchers listed in a finding's own line; the rest are in its details toggle.
RUNS_IN_LINE = 4
# Distinct raw details kept per group: they repeat when vouchers share a cause, and one page should not carry hundreds.
DETAILS_KEPT = 5


@dataclass(frozen=True, slots=True)
class Cause:
    """A recognized cause: its code (a catalog key under ``quality.cause.``) and the values its sentence names."""

    code: str
    values: tuple[tuple[str, Any], ...] = ()

    @property
    def pending(self) -> bool:
        """Whether the vouchers still wait for a verdict, rather than disagree."""
        return self.code in ("records_waiting", "baseline_records_waiting", "contract_missing", "other_pending")


@dataclass(slots=True)
class CauseGroup:
    """The vouchers of one anchor and gateway that share a cause, with their distinct raw details."""

    anchor: str
    gateway: str
    cause: Cause
    seqs: list[int] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    """Up to :data:`DETAILS_KEPT` distinct details, in the order of their first voucher."""
    distinct_details: int = 0


_OWNED = re.compile(r"machine '(?P<machine>[^']*)' is measured by gateway '(?P<owner>[^']*)'")
_NOT_OWNER = re.compile(r", not by this voucher's gateway '[^']*'")
_NOT_UPLOADED = re.compile(r"evidence digest matches; contract '(?P<contract>[^']*)' with anchor '(?P<anchor>[^']*)' is not uploaded yet")
_DIFFERENCE = re.compile(r"(?P<part>reporting|sufficiency|baseline|delta\.point|delta) .* != claimed ", re.S)
_FAILED = re.compile(r"(?:cannot recompute the day|recomputation failed): (?P<error>.*)", re.S)
# Parts whose difference follows from a different baseline: the gain is measured against it.
_FOLLOWS_BASELINE = {"baseline", "delta", "delta.point"}


def parse_detail(detail: str, *, pending: bool) -> Cause:
    """Return the cause of one voucher's reproduce detail; ``pending`` is True while the voucher has no verdict yet."""
    if pending:
        if detail.startswith("waiting for baseline records"):
            return Cause("baseline_records_waiting")
        if detail.startswith("waiting for records"):
            return Cause("records_waiting")
        if found := _NOT_UPLOADED.fullmatch(detail):
            return Cause("contract_missing", (("contract", found["contract"]), ("anchor", found["anchor"])))
        return Cause("other_pending")

    owned = tuple((found["machine"], found["owner"]) for found in _OWNED.finditer(detail))
    if owned and _NOT_OWNER.search(detail):
        return Cause("machine_owned", (("owned", owned),))
    if detail.startswith("evidence digest of the "):
        return Cause("evidence_differs")
    if found := _FAILED.fullmatch(detail):
        return Cause("recompute_failed", (("error", found["error"]),))
    # The reproduction joins one "<part> <recomputed> != claimed <claimed>" per differing part with "; ".
    parts = tuple(dict.fromkeys(found["part"] for segment in detail.split("; ") if (found := _DIFFERENCE.match(segment))))
    if "baseline" in parts and set(parts) <= _FOLLOWS_BASELINE:
        return Cause("baseline_differs")
    if parts:
        return Cause("numbers_differ", (("parts", parts),))
    return Cause("other_mismatch")


def group_vouchers(rows: Iterable[Mapping[str, Any]]) -> list[CauseGroup]:
    """Group vouchers by anchor, gateway and cause, ordered by anchor, gateway, disagreements before pending ones, first sequence.

    Each row has ``anchor_id``, ``gateway_id``, ``seq``, ``reproduced`` (False, or None while pending) and ``reproduce_detail``.
    """
    groups: dict[tuple[str, str, Cause], CauseGroup] = {}
    for row in rows:
        detail = row["reproduce_detail"] or ""
        cause = parse_detail(detail, pending=row["reproduced"] is None)
        group = groups.setdefault((row["anchor_id"], row["gateway_id"], cause), CauseGroup(row["anchor_id"], row["gateway_id"], cause))
        group.seqs.append(row["seq"])
        if detail not in group.details:
            group.distinct_details += 1
            if len(group.details) < DETAILS_KEPT:
                group.details.append(detail)
    for group in groups.values():
        group.seqs.sort()
    return sorted(groups.values(), key=lambda g: (g.anchor, g.gateway, g.cause.pending, g.seqs[0]))


def voucher_runs(gateway: str, seqs: Iterable[int]) -> list[str]:
    """Return the voucher ids of consecutive sequence numbers as runs: ``gw-b:70–101``, or one id for a run of one."""
    runs: list[list[int]] = []
    for seq in sorted(set(seqs)):
        if runs and seq == runs[-1][-1] + 1:
            runs[-1].append(seq)
        else:
            runs.append([seq])
    return [voucher_id(gateway, run[0]) if len(run) == 1 else f"{voucher_id(gateway, run[0])}–{run[-1]}" for run in runs]


def _listing(language: str, items: list[str], *, ids: bool = False) -> str:
    """Join ``items`` as a list in ``language``; ids and commands take spaces around the Chinese "和", phrases do not."""
    if len(items) == 1:
        return items[0]
    last = translate(language, "quality.list_and" if ids else "reason.list_and")
    return translate(language, "reason.list_comma").join(items[:-1]) + last + items[-1]


def _cause_text(group: CauseGroup, language: str, tenant: str) -> str:
    cause = group.cause
    values = dict(cause.values)
    key = f"quality.cause.{cause.code}"
    if cause.code == "machine_owned":
        owned = values["owned"]
        pairs = _listing(language, [translate(language, "quality.owned_pair", machine=machine, owner=owner) for machine, owner in owned])
        owners = _listing(language, list(dict.fromkeys(owner for _, owner in owned)), ids=True)
        start = translate(language, "quality.move_start")
        moves = [f"valuegate cloud admin machine-move {tenant} {machine} {group.gateway} --from {start}" for machine, _ in owned]
        commands = _listing(language, moves, ids=True)
        return translate(language, key, pairs=pairs, owners=owners, gateway=group.gateway, commands=commands)
    if cause.code == "numbers_differ":
        parts = _listing(language, [translate(language, f"quality.part.{part}") for part in values["parts"]])
        return translate(language, key, parts=parts)
    if cause.code in ("other_mismatch", "other_pending"):
        text = translate(language, key, detail=group.details[0] or "–")
        if group.distinct_details > 1:
            text += translate(language, "quality.more_details", count=group.distinct_details - 1)
        return text
    return translate(language, key, gateway=group.gateway, tenant=tenant, **values)


def group_text(group: CauseGroup, language: str, tenant: str) -> str:
    """Render one group as a finding line in ``language``; ``tenant`` goes into the commands it suggests."""
    runs = voucher_runs(group.gateway, group.seqs)
    listed = translate(language, "reason.list_comma").join(runs[:RUNS_IN_LINE]) + ("…" if len(runs) > RUNS_IN_LINE else "")
    key = "quality.group_one" if len(group.seqs) == 1 else "quality.group"
    return translate(language, key, gateway=group.gateway, count=len(group.seqs), vouchers=listed, cause=_cause_text(group, language, tenant))
