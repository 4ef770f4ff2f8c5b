"""Edge command ``valuegate oee``: per-day KPIs of a machine's exported tag trace, without a PLC, broker or database."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from valuegate.adapters.tagmap import TagMap
    from valuegate.edge.kernels import Kpis, ShiftCalendar
    from valuegate.edge.trace import Trace, TraceRow

# Scheme -> loader of ``scheme:NAME`` traces. The root command line adds ``recording``
# (the shipped recordings), because the edge layer does not import the simulators.
_TRACE_SOURCES: dict[str, tuple[Callable[[str], Trace], Callable[[], Iterable[str]]]] = {}


def add_trace_source(scheme: str, load: Callable[[str], Trace], names: Callable[[], Iterable[str]] = tuple) -> None:
    """Let TRACE be written as ``scheme:NAME``; ``load(NAME)`` returns the trace or raises ValueError naming the choices.

    ``names()`` returns the NAMEs the source can load. A missing file of such a name gets a hint to add the scheme.
    """
    _TRACE_SOURCES[scheme] = (load, names)


def open_trace(reference: str) -> Trace:
    """Return the trace ``reference`` names: ``scheme:NAME`` of an added source, otherwise a CSV or Parquet file."""
    from valuegate.edge.trace import TraceError, read_trace

    path = Path(reference)
    scheme, colon, name = reference.partition(":")
    if colon and scheme in _TRACE_SOURCES and not path.exists():
        return _TRACE_SOURCES[scheme][0](name)
    if not path.exists():
        for scheme, (_, names) in _TRACE_SOURCES.items():
            if reference in names():
                msg = f"{reference}: trace file not found; to read the shipped recording {reference!r}, write {scheme}:{reference}"
                raise TraceError(msg, file=reference)
    return read_trace(path)


def _load_map(reference: str) -> TagMap:
    from valuegate.adapters.tagmap import load_tag_map
    from valuegate.edge.trace import resolve_tag_map

    return load_tag_map(resolve_tag_map(reference))


def _state_samples(machine: str, rows: list[TraceRow], tag_map: TagMap, unmatched: dict[tuple, int]):
    """Replay the rows through the tag map's state rules; return sample arrays and the reason table.

    Counts, in ``unmatched``, the state input rows after which no rule matched,
    keyed by the state inputs' (tag, value) pairs at that instant.
    """
    import numpy as np

    from valuegate.adapters.rules import StateEvaluator
    from valuegate.adapters.samples import Sample

    evaluator = StateEvaluator(tag_map)
    watched = set(evaluator.inputs) | {rule.reason_tag for rule in tag_map.states.rules if rule.reason_tag}
    # The evaluator labels a result that fell through every rule this way (see StateEvaluator.evaluate).
    default_label = f"no rule matched; default {tag_map.states.default}"
    latest: dict[str, Any] = {}
    reasons: dict[str, int] = {}
    ts, states, reason_index = [], [], []
    for row in rows:
        if row.tag not in watched:
            continue
        evaluator.update(Sample(machine, row.tag, row.ts_ms, "plc", row.ts_ms, row.value, row.value, row.status))
        result = evaluator.evaluate()
        if row.tag in evaluator.inputs:
            latest[row.tag] = row.value
            if result.label == default_label:
                key = tuple((name, latest[name]) for name in evaluator.inputs)
                unmatched[key] = unmatched.get(key, 0) + 1
        # Every row is kept, even an unchanged state, so that a silent gap can expire the state.
        ts.append(row.ts_ms)
        states.append(result.code)
        reason_index.append(-1 if result.reason is None else reasons.setdefault(result.reason, len(reasons)))
    return np.array(ts, np.int64), np.array(states, np.int8), np.array(reason_index, np.int32), list(reasons)


def _counts(rows: list[TraceRow], tag_map: TagMap, minute0: int, n_minutes: int, iv: Any) -> dict[str, Any]:
    """Sum each counter's increments per minute, leaving out those whose gap touches offline time, as the edge does."""
    import numpy as np

    from valuegate.edge import kernels

    sums = {kind: np.zeros(n_minutes, np.int64) for kind in ("produced", "good", "reject")}
    seen = set()
    left_out = readings = glitches = 0
    for spec in tag_map.counters:
        picked = sorted((row for row in rows if row.tag == spec.tag), key=lambda row: row.ts_ms)
        if not picked:
            continue
        seen.add(spec.kind)
        ts = np.array([row.ts_ms for row in picked], np.int64)
        raw = np.array([float(row.value) if row.status != "bad" and isinstance(row.value, int | float) else np.nan for row in picked])
        steps = kernels.normalize_counter(ts, raw, bits=spec.bits, signed=spec.signed, max_rate_per_min=spec.max_rate_per_min)
        touched = kernels.gaps_since_accepted(kernels.gaps_touching(ts, iv, kernels.OFFLINE), steps.kind)
        left_out += int(steps.increments[touched].sum())
        readings += int(np.count_nonzero(~np.isnan(raw)))
        glitches += int(np.count_nonzero(steps.kind == kernels.GLITCH))
        sums[spec.kind] += kernels.bucket_counts(ts, np.where(touched, 0, steps.increments), minute0, n_minutes)
    produced = sums["produced"] if "produced" in seen else sums["good"] + sums["reject"]
    return {"produced": produced, "reject": sums["reject"], "left_out": left_out, "readings": readings, "glitches": glitches}


def machine_days(
    rows: list[TraceRow],
    tag_map: TagMap,
    time_zone: str,
    *,
    calendar: ShiftCalendar | None = None,
    debounce_ms: int = 0,
    max_gap_ms: int | None = None,
    notes: list[dict[str, Any]] | None = None,
) -> list[tuple[str, Kpis]]:
    """Compute the KPIs of each plant day a machine's trace rows touch.

    When ``notes`` is a list, a note is appended for state values that no rule
    of the tag map matches. Those samples still take the map's ``default`` category.
    """
    import dataclasses
    import datetime as dt

    import numpy as np

    from valuegate.edge import kernels
    from valuegate.edge.kernels.windows import zone

    machine = rows[0].machine
    tz = zone(time_zone)
    first_ms, last_ms = rows[0].ts_ms, rows[-1].ts_ms
    first = dt.datetime.fromtimestamp(first_ms / 1000, tz).date()
    last = dt.datetime.fromtimestamp(max(last_ms - 1, first_ms) / 1000, tz).date()
    days = kernels.plant_day_windows(time_zone, first, last)
    span_start, span_end = int(days.start_ms[0]), int(days.end_ms[-1])

    # Time after the last row has no data: a closing no-data sample makes it offline.
    unmatched: dict[tuple, int] = {}
    ts, states, reasons, reason_codes = _state_samples(machine, rows, tag_map, unmatched)
    if unmatched and notes is not None:
        notes.append(_unmatched_note(machine, tag_map, unmatched))
    ts = np.append(ts, last_ms)
    states = np.append(states, np.int8(-1))
    reasons = np.append(reasons, np.int32(-1))
    iv = kernels.state_intervals(ts, states, reasons, span_end, start_ms=span_start, max_gap_ms=max_gap_ms)
    if debounce_ms:
        iv = kernels.debounce(iv, debounce_ms)
    offline_runs = iv
    if calendar is not None:
        iv = kernels.apply_planned_stops(iv, kernels.calendar_stops(calendar, time_zone, span_start, span_end))

    minute0 = span_start - span_start % kernels.MINUTE_MS
    n_minutes = -(-(span_end - minute0) // kernels.MINUTE_MS)
    table = kernels.minute_table(iv, minute0, n_minutes, len(reason_codes))
    counts = _counts(rows, tag_map, minute0, n_minutes, offline_runs)
    columns = (table.state_ms, table.reason_ms, table.stops, counts["produced"], counts["reject"])
    state_ms, reason_ms, stops, produced, reject = (kernels.window_totals(table.minute_ms, column, days.start_ms, days.end_ms) for column in columns)

    result = []
    for day, label in enumerate(days.labels):
        totals = kernels.totals_from_columns(
            state_ms[day],
            produced=produced[day, 0],
            reject=reject[day, 0],
            stops=stops[day, 0],
            reasons=dict(zip(reason_codes, reason_ms[day].tolist(), strict=True)),
            ideal_cycle_time_s=tag_map.ideal_cycle_time_s,
        )
        result.append((label, kernels.kpis(totals)))
    if notes is not None and counts["left_out"]:
        text = f"machine {machine}: {counts['left_out']} counted item(s) left out because the time since the reading before touches offline time"
        notes.append({"kind": "counts_left_out", "machine": machine, "items": counts["left_out"], "text": text})
    if notes is not None and counts["glitches"]:
        text = (f"machine {machine}: {counts['glitches']} counter reading(s) rejected as glitches, jumps faster than the counter's "
                "max_rate_per_min that no later reading confirmed; check the counter tag if there are many")
        notes.append({"kind": "counter_glitches", "machine": machine, "readings": counts["glitches"], "text": text})
    if not counts["readings"]:
        # No usable count at all: zero parts would read as a machine that ran and made nothing.
        why = {name: f"no usable readings of the counter tags ({', '.join(spec.tag for spec in tag_map.counters) or 'none in the map'})"
               for name in ("effectiveness", "quality", "oee")}  # fmt: skip
        result = [(label, dataclasses.replace(kpis, effectiveness=None, quality=None, oee=None, why={**kpis.why, **why})) for label, kpis in result]
        if notes is not None:
            notes.append({"kind": "no_counter_readings", "machine": machine, "text": f"machine {machine}: {why['oee']}, so effectiveness, quality and OEE are undefined"})
    return result


def _unmatched_note(machine: str, tag_map: TagMap, unmatched: dict[tuple, int]) -> dict[str, Any]:
    samples = sum(unmatched.values())
    shown = [" ".join(f"{name}={value!r}" for name, value in key) for key in unmatched]
    listed = ", ".join(shown[:10]) + (f" and {len(shown) - 10} more" if len(shown) > 10 else "")
    default = tag_map.states.default
    text = (
        f"machine {machine}: {samples} state sample(s) matched no state rule of tag map {tag_map.name!r} "
        f"and count as {default} (the map's default): {listed}; add a rule if these are real machine states"
    )
    values = [{name: value if isinstance(value, str | int | float | bool) or value is None else str(value) for name, value in key} for key in unmatched]
    return {"kind": "unmatched_state", "machine": machine, "samples": samples, "category": default, "values": values, "text": text}


def check_trace_tags(trace: Trace, tag_map: TagMap) -> list[str]:
    """Raise when the trace lacks a tag the state rules test; return the trace tags the map does not know.

    A missing reason tag is not an error: stops then have no reason (see ``missing_reason_tags``).
    """
    from valuegate.edge.trace import TraceError

    present = set(trace.tags())
    tested = [name for rule in tag_map.states.rules for name in (*rule.when, *rule.unless)]
    for name in dict.fromkeys(tested):
        if name not in present:
            shown = ", ".join(sorted(present)[:20]) + (" ..." if len(present) > 20 else "")
            msg = f"{trace.path}: missing tag: the state rules of tag map {tag_map.name!r} test tag {name!r}, which no row of the trace has; trace tags: {shown}"
            raise TraceError(msg, file=trace.path, column="tag", value=name)
    known = set(tag_map.tag_names())
    return sorted(present - known)


def missing_reason_tags(trace: Trace, tag_map: TagMap) -> list[str]:
    """Return the reason tags the state rules name that no row of the trace has."""
    present = set(trace.tags())
    named = [rule.reason_tag for rule in tag_map.states.rules if rule.reason_tag]
    return [name for name in dict.fromkeys(named) if name not in present]


def check_counter_values(trace: Trace, tag_map: TagMap) -> None:
    """Raise on the first counter row whose value is not a number or does not fit the counter's bits and signedness.

    Rows with Bad status are skipped, as the counter kernel drops them.
    Floats are rounded half to even first, as the kernel rounds them.
    """
    from valuegate.edge.trace import TraceError, format_timestamp

    specs = {spec.tag: spec for spec in tag_map.counters}
    for row in trace.rows:
        spec = specs.get(row.tag)
        if spec is None or row.status == "bad":
            continue
        where = f"{trace.path}: row {row.row}: counter tag {row.tag!r} at {format_timestamp(row.ts_ms)}"
        value = row.value
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value or value in (float("inf"), float("-inf")):
            msg = f"{where}: value {value!r} is not a count; give a whole number, or status bad for a missing reading"
            raise TraceError(msg, file=trace.path, row=row.row, column="value", value=value)
        low, high = (-(2 ** (spec.bits - 1)), 2 ** (spec.bits - 1) - 1) if spec.signed else (0, 2**spec.bits - 1)
        if not low <= round(value) <= high:
            kind = "signed" if spec.signed else "unsigned"
            msg = (
                f"{where}: value {value!r} does not fit a {spec.bits}-bit {kind} counter ({low}..{high}); "
                f"correct the value, or the counter's bits and signed settings in tag map {tag_map.name!r}"
            )
            raise TraceError(msg, file=trace.path, row=row.row, column="value", value=value)


def _day_json(date: str, kpis: Kpis) -> dict[str, Any]:
    from valuegate.edge.methodology import rounded

    return {
        "date": date,
        "planned_min": rounded(kpis.planned_busy_min),
        "run_min": rounded(kpis.run_min),
        "downtime_min": rounded(kpis.unplanned_downtime_min),
        "idle_min": rounded(kpis.idle_min),
        "changeover_min": rounded(kpis.changeover_min),
        "offline_min": rounded(kpis.offline_min),
        "produced": kpis.produced,
        "reject": kpis.reject,
        "availability": rounded(kpis.availability),
        "effectiveness": rounded(kpis.effectiveness),
        "quality": rounded(kpis.quality),
        "oee": rounded(kpis.oee),
        "mtbf_min": rounded(kpis.mtbf_min),
        "mttr_min": rounded(kpis.mttr_min),
        "downtime_by_reason": {code: rounded(minutes) for code, minutes in kpis.downtime_by_reason.items()},
        "why": dict(kpis.why),
    }


def _trace_notes(trace: Trace, ignored_tags: list[str], missing_reasons: list[str] | None = None) -> list[dict[str, Any]]:
    """Return notes on trace columns and tags that the computation does not use, and on reason tags it lacks."""
    notes: list[dict[str, Any]] = []
    if missing_reasons:
        text = f"no rows of the reason tag(s) {', '.join(missing_reasons)}: stops are counted, but downtime by reason shows them unassigned"
        notes.append({"kind": "missing_reason_tags", "tags": list(missing_reasons), "text": text})
    if trace.ignored_columns:
        text = f"ignored columns that a trace does not use: {', '.join(trace.ignored_columns)}; the columns used are timestamp, tag, value, machine, status"
        notes.append({"kind": "ignored_columns", "columns": list(trace.ignored_columns), "text": text})
    if ignored_tags:
        shown = ", ".join(ignored_tags[:10]) + (f" and {len(ignored_tags) - 10} more" if len(ignored_tags) > 10 else "")
        notes.append({"kind": "ignored_tags", "tags": list(ignored_tags), "text": f"ignored rows of tags that the tag map does not name: {shown}"})
    return notes


def _print_table(machine: str, days: list[tuple[str, Kpis]]) -> None:
    from rich.console import Console
    from rich.table import Table

    def ratio(value: float | None) -> str:
        return "-" if value is None else f"{value * 100:.1f}%"

    def minutes(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    table = Table(title=f"machine {machine}", title_justify="left")
    columns = ("date", "planned min", "run min", "downtime min", "offline min", "produced", "rejected", "avail.", "effect.", "quality", "OEE",
               "MTBF min", "MTTR min", "top downtime reasons")
    for name in columns:
        table.add_column(name, justify="left" if name in ("date", "top downtime reasons") else "right")
    for date, kpis in days:
        top = ", ".join(f"{code} {value:.1f}" for code, value in list(kpis.downtime_by_reason.items())[:3])
        table.add_row(
            date,
            minutes(kpis.planned_busy_min),
            minutes(kpis.run_min),
            minutes(kpis.unplanned_downtime_min),
            minutes(kpis.offline_min),
            str(kpis.produced),
            str(kpis.reject),
            ratio(kpis.availability),
            ratio(kpis.effectiveness),
            ratio(kpis.quality),
            ratio(kpis.oee),
            minutes(kpis.mtbf_min),
            minutes(kpis.mttr_min),
            top or "-",
        )
    Console(width=190).print(table)


def oee(
    trace: str = typer.Argument(
        ...,
        help=(
            "CSV or Parquet export with columns timestamp (ISO-8601 with offset, or epoch ms), tag, value; optional machine, status. "
            "Or recording:NAME for a recording shipped with the simulators (bottling, mazak03, hurco02, hurco04), "
            "with the tags that `valuegate simulate NAME` serves."
        ),
    ),
    tag_map: str = typer.Option(
        ...,
        "--map",
        help=(
            "Tag map whose state rules and counters apply: a YAML file (absolute or relative to the working directory), "
            "a path in the shipped maps folder such as generic/filler-modbus.yaml or a shipped map's file name such as "
            "filler-modbus. The .yaml ending may be left off."
        ),
    ),
    calendar: Path | None = typer.Option(None, "--calendar", help="Shift calendar YAML; time outside shifts, breaks and no-order periods is planned downtime."),
    time_zone: str | None = typer.Option(
        None, "--tz", help="Plant IANA time zone that defines plant days, such as Asia/Shanghai; default: a recording's own zone, otherwise UTC."
    ),
    debounce_ms: int = typer.Option(0, "--debounce-ms", min=0, help="Absorb state runs shorter than this many milliseconds into the run before them."),
    max_gap_s: float | None = typer.Option(
        None, "--max-gap-s", min=0.001, help="Treat a state as unknown (offline) once its tags are silent for this many seconds; for polled exports."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Compute ISO 22400-2 KPIs per machine and plant day from a trace of timestamped tag values."""
    from valuegate.adapters.errors import ConfigError
    from valuegate.edge.kernels import load_calendar
    from valuegate.edge.kernels.windows import zone
    from valuegate.edge.trace import TraceError

    try:
        if time_zone is not None:
            zone(time_zone)
        mapping = _load_map(tag_map)
        shifts = load_calendar(calendar) if calendar is not None else None
        data = open_trace(trace)
        time_zone = time_zone or data.zone or "UTC"
        ignored = check_trace_tags(data, mapping)
        check_counter_values(data, mapping)
        notes = _trace_notes(data, ignored, missing_reason_tags(data, mapping))
        gap_ms = None if max_gap_s is None else round(max_gap_s * 1000)
        options = {"calendar": shifts, "debounce_ms": debounce_ms, "max_gap_ms": gap_ms, "notes": notes}
        results = [(machine, machine_days(data.rows_of(machine), mapping, time_zone, **options)) for machine in data.machines()]
    except (ConfigError, TraceError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None

    for note in notes:
        typer.echo(f"note: {note['text']}", err=True)
    if as_json:
        machines = [{"id": machine, "days": [_day_json(date, kpis) for date, kpis in days]} for machine, days in results]
        document = {"machines": machines, "notes": notes}
        sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=2) + "\n")
        return
    for machine, days in results:
        _print_table(machine, days)


def register(root: typer.Typer) -> None:
    """Add these commands to the root command line."""
    root.command("oee")(oee)
