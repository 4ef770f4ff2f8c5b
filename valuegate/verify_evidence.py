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
import io
import re
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import msgspec

from valuegate.cloud.bundle import Bundle
from valuegate.cloud.bundle_members import open_member
from valuegate.cloud.recompute import baseline_by_day, day_kpis, minute_instant
from valuegate.cloud.signature import canonical_fast
from valuegate.edge import methodology
from valuegate.edge.protocol.contract import Contract
from valuegate.edge.protocol.evidence import merkle_root
from valuegate.edge.protocol.records import MinuteRecord
from valuegate.edge.protocol.voucher import Claims

__all__ = ("EvidenceSummary", "check_evidence", "NO_RECORDS", "Progress")

Progress = Callable[[str], None]

NO_RECORDS = "evidence root not recomputed: the bundle carries no minute records; ask the vendor for a bundle with records"
_ASK = "ask the vendor for a bundle as the cloud built it"
_MINUTE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:00Z")
# A file with a wrong machine in the manifest fails on every line; the first ones show the cause.
_MAX_LINE_REASONS = 20
# A canonical record takes about 230 bytes; this leaves room for many reason codes and refuses a file padded to exhaust memory.
_MAX_RECORD_BYTES = 8192
# Read size when skipping the rest of an overlong line.
_CHUNK = 1 << 16
_DECODER = msgspec.json.Decoder(MinuteRecord)


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
    """The places of one machine's valid records in its record file, ordered by minute. Records are read back only when a check selects them.

    Each array has one entry per valid record: its minute as epoch seconds, and the offset and length of its line.
    """

    verdict: Any
    source: bytes | Path
    minutes: array = field(default_factory=lambda: array("q"))
    starts: array = field(default_factory=lambda: array("q"))
    lengths: array = field(default_factory=lambda: array("q"))
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
        return len(self.minutes) - covered

    def between(self, start: dt.datetime, end: dt.datetime) -> tuple[int, int]:
        return bisect.bisect_left(self.minutes, int(start.timestamp())), bisect.bisect_left(self.minutes, int(end.timestamp()))

    def read(self, low: int, high: int) -> tuple[list[MinuteRecord], list[bytes]]:
        """Return the records ``low`` to ``high`` (exclusive) and their leaf hashes, read back from the record file."""
        if high <= low:
            return [], []
        base = self.starts[low]
        with open_member(self.source) as handle:
            handle.seek(base)
            span = handle.read(self.starts[high - 1] + self.lengths[high - 1] - base)
        lines = [span[start - base:start - base + length] for start, length in zip(self.starts[low:high], self.lengths[low:high], strict=True)]
        # Each line passed _parse_line when the file was loaded, so it decodes, and it is canonical: its bytes are the leaf's input.
        return [_DECODER.decode(line) for line in lines], [hashlib.sha256(b"\x00" + line).digest() for line in lines]


def _lines(handle: IO[bytes]) -> Iterator[tuple[int, bytes | None]]:
    """Yield the offset of each line of ``handle`` and the line without its newline, or None for a line longer than a record may be."""
    offset = 0
    while line := handle.readline(_MAX_RECORD_BYTES + 1):
        start = offset
        offset += len(line)
        if line.endswith(b"\n"):
            yield start, line[:-1]
            continue
        if len(line) <= _MAX_RECORD_BYTES:
            yield start, line  # the last line, without a newline
            continue
        while line and not line.endswith(b"\n"):
            line = handle.readline(_CHUNK)
            offset += len(line)
        yield start, None


def _parse_line(line: bytes, machine: str, before: str | None) -> tuple[MinuteRecord, dt.datetime] | str:
    """Return one record line's record and minute instant, or why the line is no valid record of ``machine``."""
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
    return record, instant


def _read_records(bundle: Bundle, files: list[Any], progress: Progress) -> dict[str, _Machine]:
    """Parse every listed record file. Each problem fails that file's verdict, and the good lines are loaded."""
    from valuegate.verify import Verdict

    listed = bundle.manifest.get("files", {})
    by_name = {verdict.subject: verdict for verdict in files}
    machines: dict[str, _Machine] = {}
    for number, entry in enumerate(bundle.record_list, start=1):
        name, machine = entry["file"], entry["machine"]
        progress(f"reading record file {number} of {len(bundle.record_list)} ({name})")
        verdict = by_name.get(name)
        if verdict is None:
            verdict = Verdict(name)
            files.append(verdict)
        if name not in listed:
            verdict.reasons.append(f"listed under records but without a SHA-256 under files; {_ASK}")
            continue
        source = bundle.record_data.get(name)
        if source is None:
            continue  # the file check has failed it as missing
        loaded = machines[machine] = _Machine(verdict, source)
        with open_member(source) as handle:
            size = handle.seek(0, io.SEEK_END)
            if size > _MAX_RECORD_BYTES * max(entry["records"], 1):
                verdict.reasons.append(f"is {size:,} bytes, more than {_MAX_RECORD_BYTES:,} for each of the {entry['records']} records the manifest "
                                       f"gives, so it was not read; {_ASK}")
                continue
            handle.seek(0)
            bad = _load_lines(handle, machine, loaded, name, progress)
        if bad > _MAX_LINE_REASONS:
            verdict.reasons.append(f"{bad - _MAX_LINE_REASONS} more lines fail like those above")
        if len(loaded.minutes) + bad != entry["records"]:
            verdict.reasons.append(f"contains {len(loaded.minutes) + bad} records, but the manifest gives {entry['records']}; {_ASK}")
    return machines


def _load_lines(handle: IO[bytes], machine: str, loaded: _Machine, name: str, progress: Progress) -> int:
    """Check each line of one record file, note where each valid record lies, fail the file's verdict for each invalid one; return their count."""
    bad, before = 0, None
    for number, (start, line) in enumerate(_lines(handle), start=1):
        if number % 100_000 == 0:
            progress(f"reading {name}: {number:,} lines")
        if line is None:
            parsed: tuple[MinuteRecord, dt.datetime] | str = f"is longer than {_MAX_RECORD_BYTES:,} bytes, far more than a record takes, so it was not read"
        else:
            parsed = _parse_line(line, machine, before) if line else "is empty"
        if isinstance(parsed, str):
            bad += 1
            if bad <= _MAX_LINE_REASONS:
                loaded.verdict.reasons.append(f"line {number} {parsed}")
            continue
        before = parsed[0].minute
        loaded.minutes.append(int(parsed[1].timestamp()))
        loaded.starts.append(start)
        loaded.lengths.append(len(line))
    return bad


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
        selected, hashes = machine.read(low, high)
        records += selected
        leaves += hashes
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


def check_evidence(bundle: Bundle, contract: Contract | None, claims_by_id: dict[str, Claims], vouchers: list[Any], files: list[Any],
                   progress: Progress = lambda step: None) -> EvidenceSummary:
    """Rebuild each voucher's evidence root from the bundle's records, recompute its figures, and add a reason to each failing verdict.

    ``progress`` is called with a short English phrase before each record file and each voucher.
    """
    summary = EvidenceSummary()
    _fail_unlisted_record_files(bundle, files)
    if not bundle.record_list:
        for verdict in vouchers:
            if verdict.subject in claims_by_id:
                verdict.notes.append(NO_RECORDS)
                summary.not_checked += 1
        return summary

    machines = _read_records(bundle, files, progress)
    summary.files = len(bundle.record_list)
    summary.records = sum(len(machine.minutes) for machine in machines.values())
    reproduced = {str(item.get("voucher_id")): item.get("reproduced") for item in bundle.stored or [] if isinstance(item, dict)}
    baselines: dict[tuple[Any, ...], methodology.BaselineResult | methodology.InsufficientBaseline] = {}
    for number, verdict in enumerate(vouchers, start=1):
        progress(f"recomputing voucher {number} of {len(vouchers)}")
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
                baselines[key] = baseline_by_day(anchor, claims, lambda start, end: _select(machines, ids, start, end)[0])
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
