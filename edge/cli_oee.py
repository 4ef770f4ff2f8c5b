"""Edge command ``valuegate oee``: per-day KPIs of a machine's exported tag trace, without a PLC, broker or database."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from valuegate.adapters.tagmap import TagMap
    from valuegate.edge.kernels import Kpis, ShiftCalendar
    from valuegate.edge.trace import Trace, TraceRow


def _load_map(reference: str) -> TagMap:
    from valuegate.adapters.tagmap import load_tag_map, shipped_tag_map_dir

    path = Path(reference)
    if not path.exists():
        shipped = sorted(shipped_tag_map_dir().rglob(f"{reference}.yaml"))
        if shipped:
            path = shipped[0]
    return load_tag_map(path)


def _state_samples(machine: str, rows: list[TraceRow], tag_map: TagMap):
    """Replay the rows through the tag map's state rules; return sample arrays and the reason table."""
    import numpy as np

    from valuegate.adapters.rules import StateEvaluator
    from valuegate.adapters.samples import Sample

    evaluator = StateEvaluator(tag_map)
    watched = set(evaluator.inputs) | {rule.reason_tag for rule in tag_map.states.rules if rule.reason_tag}
    reasons: dict[str, int] = {}
    ts, states, reason_index = [], [], []
    for row in rows:
        if row.tag not in watched:
            continue
        evaluator.update(Sample(machine, row.tag, row.ts_ms, "plc", row.ts_ms, row.value, row.value, row.status))
        result = evaluator.evaluate()
        # Every row is kept, even an unchanged state, so that a silent gap can expire the state.
        ts.append(row.ts_ms)
        states.append(result.code)
        reason_index.append(-1 if result.reason is None else reasons.setdefault(result.reason, len(reasons)))
    return np.array(ts, np.int64), np.array(states, np.int8), np.array(reason_index, np.int32), list(reasons)


def _counts(rows: list[TraceRow], tag_map: TagMap, minute0: int, n_minutes: int) -> dict[str, Any]:
    import numpy as np

    from valuegate.edge.kernels import counter_minutes

    sums = {kind: np.zeros(n_minutes, np.int64) for kind in ("produced", "good", "reject")}
    seen = set()
    for spec in tag_map.counters:
        picked = [row for row in rows if row.tag == spec.tag]
        if not picked:
            continue
        seen.add(spec.kind)
        ts = np.array([row.ts_ms for row in picked], np.int64)
        raw = np.array([float(row.value) if row.status != "bad" and isinstance(row.value, int | float) else np.nan for row in picked])
        minutes = counter_minutes(ts, raw, minute0, n_minutes, bits=spec.bits, signed=spec.signed, max_rate_per_min=spec.max_rate_per_min)
        sums[spec.kind] += minutes.counts
    produced = sums["produced"] if "produced" in seen else sums["good"] + sums["reject"]
    return {"produced": produced, "reject": sums["reject"]}


def machine_days(
    rows: list[TraceRow],
    tag_map: TagMap,
    time_zone: str,
    *,
    calendar: ShiftCalendar | None = None,
    debounce_ms: int = 0,
    max_gap_ms: int | None = None,
) -> list[tuple[str, Kpis]]:
    """Compute the KPIs of each plant day a machine's trace rows touch."""
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
    ts, states, reasons, reason_codes = _state_samples(machine, rows, tag_map)
    ts = np.append(ts, last_ms)
    states = np.append(states, np.int8(-1))
    reasons = np.append(reasons, np.int32(-1))
    iv = kernels.state_intervals(ts, states, reasons, span_end, start_ms=span_start, max_gap_ms=max_gap_ms)
    if debounce_ms:
        iv = kernels.debounce(iv, debounce_ms)
    if calendar is not None:
        iv = kernels.apply_planned_stops(iv, kernels.calendar_stops(calendar, time_zone, span_start, span_end))

    minute0 = span_start - span_start % kernels.MINUTE_MS
    n_minutes = -(-(span_end - minute0) // kernels.MINUTE_MS)
    table = kernels.minute_table(iv, minute0, n_minutes, len(reason_codes))
    counts = _counts(rows, tag_map, minute0, n_minutes)
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
    return result


def check_trace_tags(trace: Trace, tag_map: TagMap) -> list[str]:
    """Raise when the trace lacks a tag the state rules read; return the trace tags the map does not know."""
    from valuegate.edge.trace import TraceError

    present = set(trace.tags())
    for name in tag_map.state_tags():
        if name not in present:
            shown = ", ".join(sorted(present)[:20]) + (" ..." if len(present) > 20 else "")
            msg = f"{trace.path}: unknown tag: the tag map {tag_map.name!r} reads tag {name!r}, which no row of the trace has; trace tags: {shown}"
            raise TraceError(msg, file=trace.path, column="tag", value=name)
    known = set(tag_map.tag_names())
    return sorted(present - known)


def _day_json(date: str, kpis: Kpis) -> dict[str, Any]:
    from valuegate.edge.methodology import rounded

    return {
        "date": date,
        "planned_min": rounded(kpis.planned_busy_min),
        "run_min": rounded(kpis.run_min),
        "downtime_min": rounded(kpis.unplanned_downtime_min),
        "availability": rounded(kpis.availability),
        "effectiveness": rounded(kpis.effectiveness),
        "quality": rounded(kpis.quality),
        "oee": rounded(kpis.oee),
        "mtbf_min": rounded(kpis.mtbf_min),
        "mttr_min": rounded(kpis.mttr_min),
        "downtime_by_reason": {code: rounded(minutes) for code, minutes in kpis.downtime_by_reason.items()},
        "why": dict(kpis.why),
    }


def _print_table(machine: str, days: list[tuple[str, Kpis]]) -> None:
    from rich.console import Console
    from rich.table import Table

    def ratio(value: float | None) -> str:
        return "-" if value is None else f"{value * 100:.1f}%"

    def minutes(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    table = Table(title=f"machine {machine}", title_justify="left")
    for name in ("date", "planned min", "run min", "downtime min", "avail.", "effect.", "quality", "OEE", "MTBF min", "MTTR min", "top downtime reasons"):
        table.add_column(name, justify="left" if name in ("date", "top downtime reasons") else "right")
    for date, kpis in days:
        top = ", ".join(f"{code} {value:.1f}" for code, value in list(kpis.downtime_by_reason.items())[:3])
        table.add_row(
            date,
            minutes(kpis.planned_busy_min),
            minutes(kpis.run_min),
            minutes(kpis.unplanned_downtime_min),
            ratio(kpis.availability),
            ratio(kpis.effectiveness),
            ratio(kpis.quality),
            ratio(kpis.oee),
            minutes(kpis.mtbf_min),
            minutes(kpis.mttr_min),
            top or "-",
        )
    Console(width=160).print(table)


def oee(
    trace: Path = typer.Argument(..., help="CSV or Parquet export with columns timestamp (ISO-8601 with offset, or epoch ms), tag, value; optional machine, status."),
    tag_map: str = typer.Option(..., "--map", help="Tag map YAML whose state rules and counters apply, or the name of a shipped map."),
    calendar: Path | None = typer.Option(None, "--calendar", help="Shift calendar YAML; time outside shifts, breaks and no-order periods is planned downtime."),
    time_zone: str = typer.Option("UTC", "--tz", help="Plant IANA time zone that defines plant days, such as Asia/Shanghai."),
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
    from valuegate.edge.trace import TraceError, read_trace

    try:
        zone(time_zone)
        mapping = _load_map(tag_map)
        shifts = load_calendar(calendar) if calendar is not None else None
        data = read_trace(trace)
        ignored = check_trace_tags(data, mapping)
        gap_ms = None if max_gap_s is None else round(max_gap_s * 1000)
        options = {"calendar": shifts, "debounce_ms": debounce_ms, "max_gap_ms": gap_ms}
        results = [(machine, machine_days(data.rows_of(machine), mapping, time_zone, **options)) for machine in data.machines()]
    except (ConfigError, TraceError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None

    if ignored:
        shown = ", ".join(ignored[:10]) + (f" and {len(ignored) - 10} more" if len(ignored) > 10 else "")
        typer.echo(f"note: ignored rows of tags that the tag map does not name: {shown}", err=True)
    if as_json:
        document = {"machines": [{"id": machine, "days": [_day_json(date, kpis) for date, kpis in days]} for machine, days in results]}
        sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=2) + "\n")
        return
    for machine, days in results:
        _print_table(machine, days)


def register(root: typer.Typer) -> None:
    """Add these commands to the root command line."""
    root.command("oee")(oee)
