"""From spooled events to minute records, plant days, anchor days and vouchers, one machine step at a time.

:meth:`Pipeline.step` runs on the spool thread. It summarizes every minute
that the machine's watermark has closed and closes every plant day those
minutes complete. It stores each anchor's baseline and reporting days once
all machines of its scope have closed them, and issues the vouchers that
the anchor's baseline allows. Each of those writes is one spool transaction,
made only after its inputs are on disk, so a crash between two of them
repeats at most the unfinished step.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog

from valuegate.edge import kernels, methodology
from valuegate.edge.protocol.contract import Anchor, Contract
from valuegate.edge.protocol.evidence import merkle_root
from valuegate.edge.protocol.records import RECORD_SCHEMA, MinuteRecord

from .config_checks import measures_anchor
from .issuer import VoucherSigner, iso_utc
from .minutes import MINUTE_MS, MachineInfo, summarize_minutes
from .outbox import PendingVoucher
from .spool import Spool

__all__ = ("AnchorPlan", "StepResult", "Pipeline")

log = structlog.get_logger("valuegate.edge.pipeline")


@dataclass(frozen=True)
class AnchorPlan:
    """One contract anchor this gateway measures, with its scope sorted by machine id."""

    contract: Contract
    anchor: Anchor
    machines: tuple[str, ...]
    time_zone: str


@dataclass
class StepResult:
    """Minutes, plant days and vouchers written by one step, and the anchors still waiting for a baseline."""

    minutes: int = 0
    counts_left_out: int = 0
    glitches: int = 0
    days: list[str] = field(default_factory=list)
    vouchers: list[dict[str, Any]] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)


def _totals_dict(totals: kernels.Totals) -> dict[str, Any]:
    return {**dataclasses.asdict(totals), "reasons": dict(totals.reasons)}


class Pipeline:
    """Summarizes minutes, closes days and issues vouchers for the machines of one gateway."""

    def __init__(
        self,
        machines: Sequence[MachineInfo],
        contracts: Sequence[Contract],
        signer: VoucherSigner | None,
        *,
        max_minutes_per_step: int = 1440,
    ) -> None:
        self.machines = {machine.id: machine for machine in machines}
        self.signer = signer
        self.max_minutes = max_minutes_per_step
        self.plans: list[AnchorPlan] = []
        for contract in contracts:
            for anchor in contract.anchors:
                scope = tuple(sorted(anchor.scope))
                if measures_anchor(scope, self.machines):
                    self.plans.append(AnchorPlan(contract, anchor, scope, self.machines[scope[0]].time_zone))
                elif local := sorted(set(scope) & set(self.machines)):
                    log.warning(
                        "anchor_not_measured", contract=contract.id, anchor=anchor.id, scope=list(scope), machines_here=local,
                        reason="only part of its scope is on this gateway, and no gateway issues vouchers for a scope split between gateways; "
                        "give the anchor machines of one gateway",
                    )  # fmt: skip
                else:
                    log.info("anchor_not_measured", contract=contract.id, anchor=anchor.id, scope=list(scope), machines_here=[], reason="another gateway measures it")
        self._waiting_logged: dict[tuple[str, str], int] = {}
        # Baseline per (contract, anchor) with the number of baseline days it was built from.
        self._baselines: dict[tuple[str, str], tuple[int, Any]] = {}
        self._leaf_cache: dict[tuple[str, int, int], list[bytes]] = {}

    def step(self, spool: Spool, machine_id: str, *, now_ms: int) -> StepResult:
        """Summarize the closed minutes of one machine (at most ``max_minutes_per_step``) and what they complete.

        Days, anchor days and vouchers that a crash left undone after their
        inputs were stored are picked up again here, even when no new minute
        has closed.
        """
        result = StepResult()
        machine = self.machines[machine_id]
        progress = spool.progress(machine_id)
        start = progress.minutes_done_ms
        if start is None:
            first = spool.first_event_ms(machine_id)
            if first is None:
                return result
            start = first // MINUTE_MS * MINUTE_MS
        end = min(progress.watermark_ms // MINUTE_MS * MINUTE_MS, start + self.max_minutes * MINUTE_MS)
        done = progress.minutes_done_ms
        if end > start:
            states, counters = spool.events(machine_id, start, end)
            summary = summarize_minutes(machine, progress.carry, states, counters, start, end)
            spool.store_minutes(machine_id, summary.records, done_ms=end, carry=summary.carry)
            result.minutes = (end - start) // MINUTE_MS
            result.counts_left_out = summary.counts_left_out
            if summary.counts_left_out:
                log.info("counts_left_out_offline", machine=machine_id, counts=summary.counts_left_out, reason="counter increments that span offline time have no run time to set against")
            result.glitches = summary.glitches
            if summary.glitches:
                log.info("counter_glitches_rejected", machine=machine_id, readings=summary.glitches,
                         reason="a jump faster than the counter's max_rate_per_min that no later reading confirmed; check the counter tag if it repeats")
            done = end
        if done is None:
            return result

        self._leaf_cache = {}
        result.days = self._close_days(spool, machine, progress.day_done, done)
        for plan in self.plans:
            if machine_id in plan.machines:
                self._anchor_days(spool, plan, self._unstored_days(spool, plan, machine_id))
                result.vouchers += self._issue(spool, plan, now_ms=now_ms, waiting=result.waiting)
        return result

    # -- plant days --------------------------------------------------------

    def _close_days(self, spool: Spool, machine: MachineInfo, day_done: str | None, end_ms: int) -> list[str]:
        tz = kernels.windows.zone(machine.time_zone)
        if day_done is not None:
            first = dt.date.fromisoformat(day_done) + dt.timedelta(days=1)
        else:
            first_minute = spool.db.execute("SELECT min(minute_ms) FROM minutes WHERE machine = ?", (machine.id,)).fetchone()[0]
            if first_minute is None:
                return []
            first = dt.datetime.fromtimestamp(first_minute / 1000, tz).date()
        last = dt.datetime.fromtimestamp(end_ms / 1000, tz).date()
        if last < first:
            return []
        windows = kernels.plant_day_windows(machine.time_zone, first, last)
        closed: list[str] = []
        ideal = {machine.id: machine.tag_map.ideal_cycle_time_s}
        for label, day_start, day_end in zip(windows.labels, windows.start_ms.tolist(), windows.end_ms.tolist(), strict=True):
            if day_end > end_ms:
                break
            records = [msgspec.json.decode(text, type=MinuteRecord) for text in spool.minute_texts(machine.id, day_start, day_end)]
            totals = kernels.totals_from_records(records, ideal_cycle_time_s=ideal)
            spool.store_day(machine.id, label, day_start, day_end, {"totals": _totals_dict(totals), "records": len(records)})
            closed.append(label)
        return closed

    # -- anchors -----------------------------------------------------------

    def _scope_totals(self, spool: Spool, plan: AnchorPlan, plant_date: str) -> kernels.Totals | None:
        """Sum the scope's machine days, each valued at the machine's ideal cycle time in force now.

        A plant day is closed with the cycle time of its day. A voucher
        measures its baseline and reporting days with the one cycle time it
        names, so that after a tag-map change both sides use the same value.
        The cloud recomputes with that value and reaches the same figures.
        The ideal time of a machine day is its produced count times the
        cycle time in whole microseconds, so revaluing it is exact.
        """
        total = kernels.Totals()
        for machine in plan.machines:
            day = spool.day(machine, plant_date)
            if day is None:
                return None
            per_item = kernels.ideal_us_per_item(self.machines[machine].tag_map.ideal_cycle_time_s)
            totals = kernels.Totals(**day["totals"])
            totals = dataclasses.replace(
                totals,
                ideal_us=0 if per_item is None else totals.produced * per_item,
                produced_without_ideal=totals.produced if per_item is None else 0,
            )
            total = total + totals
        return total

    def _day_totals(self, spool: Spool, plan: AnchorPlan, plant_date: str, body: dict[str, Any]) -> kernels.Totals:
        """Return an anchor day's totals at the current cycle times, or as stored when a machine day is missing."""
        totals = self._scope_totals(spool, plan, plant_date)
        return totals if totals is not None else kernels.Totals(**body["totals"])

    def _unstored_days(self, spool: Spool, plan: AnchorPlan, machine_id: str) -> list[str]:
        """Return the machine's closed days in the anchor's periods that have no anchor day yet."""
        anchor = plan.anchor
        rows = spool.db.execute(
            "SELECT plant_date FROM days d WHERE machine = ? AND plant_date >= ? AND plant_date <= ? AND NOT EXISTS "
            "(SELECT 1 FROM anchor_days a WHERE a.contract = ? AND a.anchor = ? AND a.plant_date = d.plant_date) ORDER BY plant_date",
            (machine_id, anchor.baseline.first_date.isoformat(), anchor.reporting.last_date.isoformat(), plan.contract.id, anchor.id),
        ).fetchall()
        return [row[0] for row in rows]

    def _anchor_days(self, spool: Spool, plan: AnchorPlan, dates: list[str]) -> None:
        anchor = plan.anchor
        for plant_date in dates:
            day = dt.date.fromisoformat(plant_date)
            if anchor.baseline.first_date <= day <= anchor.baseline.last_date:
                role = "baseline"
            elif anchor.reporting.first_date <= day <= anchor.reporting.last_date:
                role = "reporting"
            else:
                continue
            totals = self._scope_totals(spool, plan, plant_date)
            if totals is None:
                continue
            body: dict[str, Any] = {"totals": _totals_dict(totals)}
            if role == "reporting":
                window = kernels.plant_day_windows(plan.time_zone, day, day)
                start_ms, end_ms = int(window.start_ms[0]), int(window.end_ms[0])
                leaves = [leaf for machine in plan.machines for leaf in self._leaves(spool, machine, start_ms, end_ms)]
                evidence = {"merkle_root": merkle_root(leaves), "records": len(leaves), "record_schema": RECORD_SCHEMA}
                body.update(start_ms=start_ms, end_ms=end_ms, evidence=evidence)
            spool.store_anchor_day(plan.contract.id, anchor.id, plant_date, role, body)

    def _leaves(self, spool: Spool, machine: str, start_ms: int, end_ms: int) -> list[bytes]:
        """Return the Merkle leaf hashes of a machine's records in a window, computed once per step.

        The spool stores each record as its RFC 8785 canonical text, so the
        leaf is hashed from those bytes without parsing them again. The
        result equals :func:`valuegate.edge.protocol.evidence.leaf_hash`.
        """
        key = (machine, start_ms, end_ms)
        if key not in self._leaf_cache:
            self._leaf_cache[key] = [hashlib.sha256(b"\x00" + text.encode("utf-8")).digest() for text in spool.minute_texts(machine, start_ms, end_ms)]
        return self._leaf_cache[key]

    def baseline_spans(self) -> list[tuple[str, int, int]]:
        """Return ``(machine, start_ms, end_ms)`` of every anchor's baseline period, whose records the cloud rebuilds baselines from."""
        spans = set()
        for plan in self.plans:
            windows = kernels.plant_day_windows(plan.time_zone, plan.anchor.baseline.first_date, plan.anchor.baseline.last_date)
            spans.update((machine, int(windows.start_ms[0]), int(windows.end_ms[-1])) for machine in plan.machines)
        return sorted(spans)

    def _baseline(self, spool: Spool, plan: AnchorPlan) -> Any:
        """Return the anchor's baseline, rebuilt only when a baseline day was added since the last build."""
        key = (plan.contract.id, plan.anchor.id)
        count = spool.anchor_day_count(*key, "baseline")
        cached = self._baselines.get(key)
        if cached is not None and cached[0] == count:
            return cached[1]
        baseline_days = [(date, kernels.kpis(self._day_totals(spool, plan, date, body))) for date, body, _ in spool.anchor_days(*key, "baseline")]
        baseline = methodology.build_baseline(plan.anchor, baseline_days)
        self._baselines[key] = (count, baseline)
        return baseline

    def _issue(self, spool: Spool, plan: AnchorPlan, *, now_ms: int, waiting: list[str]) -> list[dict[str, Any]]:
        anchor = plan.anchor
        # Read only the days still waiting for a voucher, so that each step costs the same however long the contract has run.
        pending = [(date, body) for date, body, _ in spool.anchor_days(plan.contract.id, anchor.id, "reporting", unissued=True)]
        if not pending or self.signer is None:
            return []
        try:
            baseline = self._baseline(spool, plan)
        except methodology.InsufficientBaseline as exc:
            waiting.append(anchor.id)
            key = (plan.contract.id, anchor.id)
            # Logged again only when the covered days change, with the days left out and why (for example an undefined OEE).
            if self._waiting_logged.get(key) != exc.covered:
                self._waiting_logged[key] = exc.covered
                log.warning(
                    "vouchers_waiting_for_baseline", contract=plan.contract.id, anchor=anchor.id, covered=exc.covered, required=exc.required,
                    excluded_days=exc.excluded, reason=str(exc),
                )  # fmt: skip
            return []

        items: list[PendingVoucher] = []
        for plant_date, body in pending:
            day_kpis = kernels.kpis(self._day_totals(spool, plan, plant_date, body))
            reporting, delta, sufficiency = methodology.value_for_day(anchor, baseline, plant_date, day_kpis)
            claims_body = {
                "contract": plan.contract.id,
                "anchor": anchor.id,
                "machines": [self.machines[machine].reference() for machine in plan.machines],
                "period": {"start": iso_utc(body["start_ms"]), "end": iso_utc(body["end_ms"]), "plant_date": plant_date, "time_zone": plan.time_zone},
                "metric": msgspec.to_builtins(methodology.metric_claim(anchor.metric)),
                "reporting": msgspec.to_builtins(reporting),
                "baseline": msgspec.to_builtins(baseline.claim()),
                "delta": msgspec.to_builtins(delta),
                "sufficiency": msgspec.to_builtins(sufficiency),
                "evidence": body["evidence"],
            }
            items.append(PendingVoucher(plan.contract.id, anchor.id, plant_date, plan.machines, body["start_ms"], body["end_ms"], claims_body))
        return self.signer.issue(spool, items, now_ms=now_ms)
