"""The demo's value report: computed KPIs beside the recordings' own figures, voucher counts and realized value."""

from __future__ import annotations

import datetime as dt
import json
import urllib.request
from decimal import Decimal
from typing import Any

from .stack import FILLER, GATEWAY, MAZAK, DemoStack

__all__ = ("collect_report", "REPLAY_TOLERANCE_MIN", "MAZAK_TOLERANCE")

# Computed downtime of a bottling day may differ from the replayed stops by
# rounding to whole milliseconds per minute record, never by more than this.
REPLAY_TOLERANCE_MIN = 0.05
# Relative difference between computed and controller-counted times on a Mazak day.
MAZAK_TOLERANCE = 0.01


def _get(stack: DemoStack, path: str) -> Any:
    request = urllib.request.Request(stack.api_url + path, headers={"Authorization": f"Bearer {stack.token}", "Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - a loopback URL the demo started itself
        return json.loads(response.read())


def _minutes(hours: float) -> float:
    return round(hours * 60.0, 2)


def _ratio(value: Any) -> float | None:
    return None if value is None else round(float(value), 4)


def _day_row(kpi: dict[str, Any]) -> dict[str, Any]:
    values = kpi["kpis"]
    return {
        "date": kpi["plant_date"],
        "planned_min": round(values["planned_busy_min"], 2),
        "run_min": round(values["run_min"], 2),
        "downtime_min": round(values["unplanned_downtime_min"], 2),
        "idle_min": round(values["idle_min"], 2),
        "changeover_min": round(values["changeover_min"], 2),
        "availability": _ratio(values["availability"]),
        "effectiveness": _ratio(values.get("effectiveness")),
        "oee": _ratio(values.get("oee")),
    }


def _empty_day(day: dt.date) -> dict[str, Any]:
    """Return the row of a recorded day for which the cloud stored no telemetry."""
    return {"date": day.isoformat(), "planned_min": 0.0, "run_min": 0.0, "downtime_min": 0.0, "idle_min": 0.0, "changeover_min": 0.0, "availability": None}


def _bottling_days(stack: DemoStack, findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    simulator = stack.simulators[FILLER[0]]
    published = simulator.recording.published
    first, last = min(published), max(published)
    rows = {row["date"]: row for row in map(_day_row, _get(stack, f"/api/v1/machines/{FILLER[0]}/kpis?from={first}&to={last}"))}
    days = []
    for day, figures in sorted(published.items()):
        row = rows.get(day.isoformat(), _empty_day(day))
        row["published"] = {
            "monitored_min": _minutes(figures.monitored_time_dec),
            "operation_min": _minutes(figures.operation_time_dec),
            "pause_min": _minutes(figures.pause_time_dec),
            "efficiency": round(figures.efficiency, 4),
            "units": figures.production_units,
        }
        replayed = simulator.recording.days[day].stopped_ms / 60_000
        row["replayed_stop_min"] = round(replayed, 2)
        row["downtime_minus_published_min"] = round(row["downtime_min"] - row["published"]["pause_min"], 2)
        # The recording's own disagreements are listed by the loader; this flags the chain losing or adding stop time.
        if abs(row["downtime_min"] - replayed) > REPLAY_TOLERANCE_MIN:
            findings.append(
                {
                    "machine": FILLER[0],
                    "date": day.isoformat(),
                    "kind": "computed_differs_from_replay",
                    "detail": f"computed unplanned downtime {row['downtime_min']:.2f} min; the replayed stops add up to {replayed:.2f} min",
                }
            )
        days.append(row)
    return days


def _mazak_days(stack: DemoStack, findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    simulator = stack.simulators[MAZAK[0]]
    published = simulator.recording.published
    first, last = min(published), max(published)
    rows = {row["date"]: row for row in map(_day_row, _get(stack, f"/api/v1/machines/{MAZAK[0]}/kpis?from={first}&to={last}"))}
    days = []
    for day, counters in sorted(published.items()):
        row = rows.get(day.isoformat(), _empty_day(day))
        auto = counters.get("auto_time")
        total = counters.get("total_time")
        row["published"] = {
            "auto_time_min": round(auto.increment / 60.0, 2) if auto else None,
            "total_time_min": round(total.increment / 60.0, 2) if total else None,
        }
        for ours, theirs, label in (("run_min", "auto_time_min", "auto_time"), ("planned_min", "total_time_min", "total_time")):
            counted = row["published"][theirs]
            if counted:
                share = (row[ours] - counted) / counted
                row[f"{ours}_vs_{label}"] = round(share, 4)
                if abs(share) > MAZAK_TOLERANCE:
                    findings.append(
                        {
                            "machine": MAZAK[0],
                            "date": day.isoformat(),
                            "kind": f"{label}_disagrees",
                            "detail": f"computed {ours} {row[ours]:.1f} min differs from the controller's {label} increment {counted:.1f} min by {share:+.1%}",
                        }
                    )
        days.append(row)
    return days


def _voucher_counts(stack: DemoStack, contracts: list[str]) -> dict[str, int]:
    counts = {"issued": stack.issued, "stored": 0, "verified": 0, "reproduced": 0, "gap": 0, "mismatch": 0, "rejected": 0}
    for contract in contracts:
        value = _get(stack, f"/api/v1/contracts/{contract}/value")
        counts["rejected"] += int(value.get("rejected", 0))
        for anchor in value["anchors"]:
            states = anchor["vouchers"]
            counts["stored"] += sum(states.get(name, 0) for name in ("verified", "reproduced", "mismatch", "gap"))
            counts["verified"] += states.get("verified", 0) + states.get("reproduced", 0)
            counts["reproduced"] += states.get("reproduced", 0)
            counts["gap"] += states.get("gap", 0)
            counts["mismatch"] += states.get("mismatch", 0)
    return counts


def _value(stack: DemoStack, contracts: list[str]) -> list[dict[str, Any]]:
    result = []
    for contract in contracts:
        value = _get(stack, f"/api/v1/contracts/{contract}/value")
        for anchor in value["anchors"]:
            result.append(
                {
                    "contract": contract,
                    "anchor": anchor["anchor"],
                    "title": anchor["title"],
                    "metric": anchor["metric"],
                    "settlement": value["settlement"],
                    "points_gained": str(anchor["points_gained"]),
                    "avoided_minutes": str(anchor["avoided_minutes"]),
                    "running_days": anchor["running_days"],
                    "unit_price": None if anchor["unit_price"] is None else str(anchor["unit_price"]),
                    "amount": None if anchor["amount"] is None else str(anchor["amount"]),
                    "currency": value["currency"],
                    "cap_applied": anchor["cap_applied"],
                }
            )
    return result


def collect_report(stack: DemoStack, *, extras: dict[str, Any] | None = None) -> dict[str, Any]:
    """Gather the report from the running cloud API and the recordings' published figures."""
    contracts = [item["id"] for item in _get(stack, "/api/v1/contracts")]
    findings: list[dict[str, Any]] = []
    bottling = stack.simulators[FILLER[0]].recording
    mazak = stack.simulators[MAZAK[0]].recording
    for machine, recording in ((FILLER[0], bottling), (MAZAK[0], mazak)):
        findings += [{"machine": machine, **{k: str(v) for k, v in item.items()}} for item in recording.findings]
    machines = [
        {"id": FILLER[0], "recording": "bottling-line", "protocol": "Modbus TCP", "time_zone": FILLER[1], "days": _bottling_days(stack, findings)},
        {"id": MAZAK[0], "recording": "nist-mazak03", "protocol": "OPC UA", "time_zone": MAZAK[1], "days": _mazak_days(stack, findings)},
    ]
    gateway = _get(stack, f"/api/v1/gateways/{GATEWAY}")
    value = _value(stack, contracts)
    total = sum((Decimal(item["amount"]) for item in value if item["amount"] is not None), Decimal(0))
    report = {
        "generated_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machines": machines,
        "vouchers": _voucher_counts(stack, contracts),
        "chain": {"gateway": GATEWAY, "stored_through": gateway.get("stored_through"), "highest_seq": gateway.get("highest_seq")},
        "value": value,
        "realized_total": str(total),
        "currency": value[0]["currency"] if value else "CNY",
        "findings": findings,
        "timings_s": {name: round(seconds, 1) for name, seconds in stack.timings.items()},
    }
    report.update(extras or {})
    return report
