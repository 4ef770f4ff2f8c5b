"""Evidence checks of an auditor bundle: each voucher's Merkle root rebuilt from the bundle's minute records, then its figures recomputed.

A voucher of the bundle's contract passes when the records of its machines
and period give its evidence root and record count. Then the kernels and the
value methodology run on those records and on the records of its anchor's
baseline period, and must give its reporting, sufficiency, baseline and
delta parts exactly. The cloud runs the same recomputation on its own copy
of the records.
"""

from __future__ import annotations

import bisect
import datetime as dt
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import msgspec

from valuegate.cloud.bundle import Bundle
from valuegate.cloud.recompute import baseline_from_records, baseline_span, day_kpis, minute_instant
from valuegate.cloud.signature import canonical_fast
from valuegate.edge import methodology
from valuegate.edge.protocol.contract import Contract
from valuegate.edge.protocol.evidence import merkle_root
from valuegate.edge.protocol.records import MinuteRecord
from valuegate.edge.protocol.voucher import Claims

__all__ = ("EvidenceSummary", "check_evidence", "NO_RECORDS")

NO_RECORDS = "evidence root not recomputed: the bundle carries no minute records; ask the vendor for a bundle with records"
_ASK = "ask the vendor for a bundle as the cloud built it"
_MINUTE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:00Z")
# A file with a wrong machine in the manifest fails on every line; the first ones show the cause.
_MAX_LINE_REASONS = 20
# A canonical record takes about 230 bytes; this leaves room for many reason codes and refuses a file padded to exhaust memory.
_MAX_RECORD_BYTES = 8192


@dataclass(slots=True)
class EvidenceSummary:
    """How many vouchers were recomputed from the bundle's records, and how many could not be."""

    records: int = 0
    recomputed: int = 0
    not_checked: int = 0
    failed: int = 0
    files: int = 0
    """Record files the manifest lists, read or not."""

    def as_dict(self) -> dict[str, int]:
        return {"files": self.files, "records": self.records, "recomputed": self.recomputed, "not_checked": self.not_checked, "failed": self.failed}


@dataclass(slots=True)
class _Machine:
    """One machine's records from the bundle, ordered by minute, with their minute instants and leaf hashes."""

    verdict: Any = None
    records: list[MinuteRecord] = field(default_factory=list)
    minutes: list[dt.datetime] = field(default_factory=list)
    leaves: list[bytes] = field(default_factory=list)
    used: list[tuple[int, int]] = field(default_factory=list)
    """Index ranges of the records that a voucher's day or an anchor's baseline period selected."""

    def unused(self) -> int:
        """Return how many records no voucher day or baseline period selected."""
        covered, reach = 0, 0
        for low, high in sorted(self.used):
            low = max(low, reach)
            if high > low:
                covered += high - low
                reach = high
        return len(self.records) - covered

    def between(self, start: dt.datetime, end: dt.datetime) -> tuple[int, int]:
        return bisect.bisect_left(self.minutes, start), bisect.bisect_left(self.minutes, end)


def _parse_line(line: bytes, machine: str, before: str | None) -> tuple[MinuteRecord, dt.datetime, bytes] | str:
    """Return one record line's record, minute instant and leaf hash, or why the line is no valid record of ``machine``."""
    try:
        record = msgspec.json.decode(line, type=MinuteRecord)
    except msgspec.ValidationError as exc:
        return f"is not a valuegate/minute/v1 record: {exc}"
    except msgspec.DecodeError as exc:
        return f"is not valid JSON: {exc}"
    if record.machine != machine:
        return f"is a record of machine {record.machine!r}, but the file holds machine {machine!r}"
    if not _MINUTE.fullmatch(record.minute):
        return f"has the minute {record.minute!r}, which is no UTC minute written YYYY-MM-DDTHH:MM:00Z"
    try:
        instant = minute_instant(record.minute)
        canonical = canonical_fast({name: getattr(record, name) for name in record.__struct_fields__})
    except ValueError as exc:
        return f"cannot be read as a record: {exc}"
    if canonical != line:
        return "is not in RFC 8785 canonical form (keys sorted, no spaces), so hashing the line as the auditor guide says gives another leaf"
    if before is not None and record.minute <= before:
        return f"(minute {record.minute}) is not after the line before it; records go one a minute, in time order"
    return record, instant, hashlib.sha256(b"\x00" + canonical).digest()


def _read_records(bundle: Bundle, files: list[Any]) -> dict[str, _Machine]:
    """Parse every listed record file. Each problem fails that file's verdict, and the good lines are loaded."""
    from valuegate.verify import Verdict

    listed = bundle.manifest.get("files", {})
    by_name = {verdict.subject: verdict for verdict in files}
    machines: dict[str, _Machine] = {}
    for entry in bundle.record_list:
        name, machine = entry["file"], entry["machine"]
        verdict = by_name.get(name)
        if verdict is None:
            verdict = Verdict(name)
            files.append(verdict)
        if name not in listed:
            verdict.reasons.append(f"listed under records but without a SHA-256 under files; {_ASK}")
            continue
        data = bundle.record_data.get(name)
        if data is None:
            continue  # the file check has failed it as missing
        loaded = machines[machine] = _Machine(verdict)
        if len(data) > _MAX_RECORD_BYTES * max(entry["records"], 1):
            verdict.reasons.append(f"is {len(data):,} bytes, more than {_MAX_RECORD_BYTES:,} for each of the {entry['records']} records the manifest "
                                   f"gives, so it was not read; {_ASK}")
            continue
        bad = 0
        lines = data.split(b"\n")
        if lines[-1] == b"":
            lines.pop()  # the newline that ends the last line
        for number, line in enumerate(lines, start=1):
            before = loaded.records[-1].minute if loaded.records else None
            parsed = _parse_line(line, machine, before) if line else "is empty"
            if isinstance(parsed, str):
                bad += 1
                if bad <= _MAX_LINE_REASONS:
                    verdict.reasons.append(f"line {number} {parsed}")
                continue
            loaded.records.append(parsed[0])
            loaded.minutes.append(parsed[1])
            loaded.leaves.append(parsed[2])
        if bad > _MAX_LINE_REASONS:
            verdict.reasons.append(f"{bad - _MAX_LINE_REASONS} more lines fail like those above")
        if len(loaded.records) + bad != entry["records"]:
            verdict.reasons.append(f"contains {len(loaded.records) + bad} records, but the manifest gives {entry['records']}; {_ASK}")
    return machines


def _select(machines: dict[str, _Machine], ids: list[str], start: dt.datetime, end: dt.datetime) -> tuple[list[MinuteRecord], list[bytes]]:
    """Return the records and leaves of ``ids`` (in that order) whose minute starts in ``[start, end)``."""
    records: list[MinuteRecord] = []
    leaves: list[bytes] = []
    for machine_id in ids:
        machine = machines.get(machine_id)
        if machine is None:
            continue
        low, high = machine.between(start, end)
        machine.used.append((low, high))
        records += machine.records[low:high]
        leaves += machine.leaves[low:high]
    return records, leaves


def _show(part: Any) -> str:
    """Return a voucher part as the compact JSON the voucher carries it in."""
    return msgspec.json.encode(part).decode()


def _pending_hint(reproduced: dict[str, Any], claims: Claims) -> str:
    if reproduced.get(claims.voucher_id) is None:
        return "stored.json says the cloud had not reproduced it yet, so its records may have been still arriving: ask the vendor for a later bundle"
    return "records were removed from the bundle or never stored: ask the vendor for the complete records"


def _compare(claims: Claims, baseline: methodology.BaselineResult, reporting: Any, delta: Any, sufficiency: Any) -> list[str]:
    """Return each recomputed part that differs from the claims."""
    differences = []
    if baseline.claim() != claims.baseline:
        claimed = claims.baseline
        differences.append(f"baseline recomputed from the records of {claimed.first_date}..{claimed.last_date} is {baseline.claim().value} "
                           f"over {baseline.claim().days} days, the voucher claims {claimed.value} over {claimed.days}")
    if reporting != claims.reporting:
        differences.append(f"reporting recomputed from the records is {_show(reporting)}, the voucher claims {_show(claims.reporting)}")
    if sufficiency != claims.sufficiency:
        differences.append(f"sufficiency recomputed from the records is {_show(sufficiency)}, the voucher claims {_show(claims.sufficiency)}")
    if delta != claims.delta:
        differences.append(f"delta recomputed from the records is {_show(delta)}, the voucher claims {_show(claims.delta)}")
    return differences


def _fail_unlisted_record_files(bundle: Bundle, files: list[Any]) -> None:
    """Fail each file under records/ that the manifest's records list does not name, because no check reads its records."""
    from valuegate.verify import Verdict

    named = {entry["file"] for entry in bundle.record_list}
    for name in sorted(name for name in bundle.digests if name.startswith("records/") and name not in named):
        verdict = next((v for v in files if v.subject == name), None)
        if verdict is None:
            verdict = Verdict(name)
            files.append(verdict)
        verdict.checked, verdict.notes = True, []
        verdict.reasons.append(f"a record file that the manifest's records list does not name, so no check reads its records; {_ASK}")


def check_evidence(bundle: Bundle, contract: Contract | None, claims_by_id: dict[str, Claims], vouchers: list[Any], files: list[Any]) -> EvidenceSummary:
    """Rebuild each voucher's evidence root from the bundle's records, recompute its figures, and add a reason to each failing verdict."""
    summary = EvidenceSummary()
    _fail_unlisted_record_files(bundle, files)
    if not bundle.record_list:
        for verdict in vouchers:
            if verdict.subject in claims_by_id:
                verdict.notes.append(NO_RECORDS)
                summary.not_checked += 1
        return summary

    machines = _read_records(bundle, files)
    summary.files = len(bundle.record_list)
    summary.records = sum(len(machine.records) for machine in machines.values())
    reproduced = {str(item.get("voucher_id")): item.get("reproduced") for item in bundle.stored or [] if isinstance(item, dict)}
    baselines: dict[tuple[Any, ...], methodology.BaselineResult | methodology.InsufficientBaseline] = {}
    for verdict in vouchers:
        claims = claims_by_id.get(verdict.subject)
        if claims is None:
            continue
        if contract is None or claims.contract != contract.id:
            verdict.notes.append(f"evidence not recomputed: a voucher of contract {claims.contract!r}, whose records this bundle does not carry")
            summary.not_checked += 1
            continue
        ids = [machine.id for machine in claims.machines]
        try:
            start, end = minute_instant(claims.period.start), minute_instant(claims.period.end)
        except ValueError:
            verdict.reasons.append(f"evidence: the period {claims.period.start!r}..{claims.period.end!r} is not two RFC 3339 instants")
            summary.failed += 1
            continue
        records, leaves = _select(machines, ids, start, end)
        root, count = merkle_root(leaves), len(leaves)
        if count < claims.evidence.records:
            # stored.json is not signed, so a missing record fails whatever that file records about the cloud's reproduction.
            verdict.reasons.append(f"evidence: the bundle carries {count} of the {claims.evidence.records} records of {', '.join(ids)} in "
                                   f"{claims.period.start}..{claims.period.end} that the voucher commits to; {_pending_hint(reproduced, claims)}")
            summary.failed += 1
            continue
        if (root, count) != (claims.evidence.merkle_root, claims.evidence.records):
            verdict.reasons.append(f"evidence: the bundle's {count} records of {', '.join(ids)} in {claims.period.start}..{claims.period.end} "
                                   f"give root {root}, the voucher claims {claims.evidence.merkle_root} over {claims.evidence.records} records")
            summary.failed += 1
            continue
        try:
            anchor = contract.anchor(claims.anchor)
        except KeyError:
            verdict.notes.append(f"evidence root rebuilt; figures not recomputed: contract.json has no anchor {claims.anchor!r}")
            summary.not_checked += 1
            continue

        # The voucher values its baseline at the ideal cycle times it names, which a tag-map change alters between vouchers.
        key = (anchor.id, tuple((machine.id, machine.ideal_cycle_time_s) for machine in claims.machines), claims.period.time_zone)
        if key not in baselines:
            try:
                baseline_records = _select(machines, ids, *baseline_span(anchor, claims.period.time_zone))[0]
                baselines[key] = baseline_from_records(anchor, claims, baseline_records)
            except methodology.InsufficientBaseline as exc:
                baselines[key] = exc
            except (ValueError, KeyError) as exc:
                # An unknown time zone (ZoneInfoNotFoundError is a KeyError) or a baseline that the kernels reject.
                verdict.reasons.append(f"baseline cannot be recomputed from the records: {exc!r}")
                summary.failed += 1
                continue
        baseline = baselines[key]
        # A bundle without baseline records fails here too: the baseline is the counterfactual that every gain is measured from.
        if isinstance(baseline, methodology.InsufficientBaseline):
            verdict.reasons.append(f"baseline: the bundle's records of {anchor.baseline.first_date}..{anchor.baseline.last_date} cover {baseline.covered} "
                                   f"of the {baseline.required} days it needs, the voucher claims {claims.baseline.days}")
            summary.failed += 1
            continue
        try:
            reporting, delta, sufficiency = methodology.value_for_day(anchor, baseline, claims.period.plant_date, day_kpis(records, claims))
        except ValueError as exc:
            verdict.reasons.append(f"figures cannot be recomputed from the records: {exc}")
            summary.failed += 1
            continue
        differences = _compare(claims, baseline, reporting, delta, sufficiency)
        verdict.reasons += differences
        if differences:
            summary.failed += 1
        else:
            summary.recomputed += 1
    for machine in machines.values():
        if unused := machine.unused():
            machine.verdict.notes.append(f"{unused} records lie outside every voucher day and baseline period of this contract, so no check reads them")
    return summary
