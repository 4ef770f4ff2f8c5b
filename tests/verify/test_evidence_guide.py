"""The auditor guide's evidence-root recipe, followed step by step on records the edge pipeline wrote, rebuilds each voucher's merkle_root."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import re
from pathlib import Path

import pytest

from valuegate.adapters.tagmap import load_tag_map, shipped_tag_map_dir
from valuegate.edge import keys
from valuegate.edge.issuer import VoucherSigner
from valuegate.edge.minutes import MachineInfo
from valuegate.edge.pipeline import Pipeline
from valuegate.edge.protocol.contract import parse_contract
from valuegate.edge.spool import Spool
from valuegate.edge.spool_rows import CounterReading, MachineBatch, StateEvent

DOCS = Path(__file__).parents[2] / "docs"
FILLER = load_tag_map(shipped_tag_map_dir() / "demo" / "bottling-filler-modbus.yaml")
ZONE = "Europe/Berlin"
# Midnight of 27 March 2026 in Berlin; the night of 28 to 29 March loses an hour to daylight saving.
T0 = int(dt.datetime(2026, 3, 26, 23, 0, tzinfo=dt.UTC).timestamp() * 1000)
DAY_MS = 86_400_000
# Code-point order puts filler-10 before filler-9, unlike a natural sort.
MACHINES = ["filler-9", "filler-10"]
# The 13 fields of a valuegate/minute/v1 record, as the guide's table lists them.
FIELDS = {"machine", "minute", "running_ms", "idle_ms", "planned_stop_ms", "unplanned_stop_ms", "changeover_ms", "offline_ms",
          "produced", "reject", "stops", "reasons", "uncertain_ms"}
CONTRACT = {
    "schema": "valuegate/contract/v1",
    "id": "c-evidence",
    "tenant": "acme",
    "customer": "Acme",
    "start": "2026-03-01",
    "end": "2026-12-31",
    "anchors": [
        {
            "id": "oee-fillers",
            "scope": MACHINES,
            "metric": "oee_points",
            "baseline": {"first_date": "2026-03-27", "last_date": "2026-03-28", "min_days": 1},
            "reporting": {"first_date": "2026-03-29", "last_date": "2026-03-30"},
            "uncertainty": {"resamples": 200, "block_days": 1, "seed": 3},
        }
    ],
}


def plant_events(rng: random.Random, start: int, end: int) -> tuple[list[StateEvent], list[CounterReading]]:
    """Return state changes (with reasons and uncertain values) and container counts over ``[start, end)``."""
    states, counters = [StateEvent(start, 0)], []
    at = start
    while (at := at + rng.randint(1_000, 900_000)) < end:
        code = rng.choice([0, 0, 0, 1, 2, 3, 3, 4, 5])
        reason = rng.choice(["17", "21", "急停"]) if code == 3 else None
        states.append(StateEvent(at, code, reason, rng.random() < 0.1))
    count = 0
    for ts in range(start + 5_000, end, 20_000):
        count = (count + rng.randint(0, 15)) % 65536  # the filler's counter is 16 bits wide and wraps
        counters.append(CounterReading(ts, "containers", count))
    return states, counters


def jcs(record: dict) -> bytes:
    """Encode a record as RFC 8785 canonical JSON.

    For objects whose values are only strings, integers and objects of
    integers, with keys in the Basic Multilingual Plane, JCS is JSON with
    keys sorted, no whitespace and UTF-8 text. So the standard library
    suffices, and no valuegate code is involved.
    """
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def guide_root(export: list[dict], claims: dict) -> tuple[str, int]:
    """Rebuild the evidence root from an export of records exactly as the auditor guide describes it."""
    machines = [machine["id"] for machine in claims["machines"]]
    start, end = claims["period"]["start"], claims["period"]["end"]
    chosen = [record for record in export if record["machine"] in machines and utc(start) <= utc(record["minute"]) < utc(end)]
    chosen.sort(key=lambda record: (machines.index(record["machine"]), utc(record["minute"])))

    level = [hashlib.sha256(b"\x00" + jcs(record)).digest() for record in chosen]
    if not level:
        return "sha256:" + hashlib.sha256(b"").hexdigest(), 0
    while len(level) > 1:
        paired = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return "sha256:" + level[0].hex(), len(chosen)


def issue_vouchers(folder: Path) -> tuple[list[dict], list[dict]]:
    """Run the edge pipeline over four Berlin plant days and return its vouchers and an export of every record, shuffled."""
    keys.create_key(folder / "keys")
    spool = Spool(folder / "spool.db")
    signer = VoucherSigner(folder / "keys", tenant="acme", site="s", gateway="gw-1")
    pipeline = Pipeline([MachineInfo(machine, FILLER, ZONE) for machine in MACHINES], [parse_contract(CONTRACT)], signer)
    rng = random.Random(7)
    end = T0 + 4 * DAY_MS
    for machine in MACHINES:
        states, counters = plant_events(rng, T0, end)
        spool.append([MachineBatch(machine, states, counters, end + 5_000)])

    vouchers = []
    for machine in MACHINES:
        while (result := pipeline.step(spool, machine, now_ms=T0)).minutes:
            vouchers += result.vouchers

    export = [record for machine in MACHINES for record in spool.minute_records(machine, T0 - DAY_MS, end + DAY_MS)]
    rng.shuffle(export)
    # An export travels as text, one record a line.
    export = [json.loads(line) for line in (json.dumps(record, ensure_ascii=False) for record in export)]
    return vouchers, export


def test_guide_recipe_rebuilds_merkle_root(tmp_path: Path) -> None:
    vouchers, export = issue_vouchers(tmp_path)
    assert [voucher["credentialSubject"]["period"]["plant_date"] for voucher in vouchers] == ["2026-03-29", "2026-03-30"]

    for record in export:
        assert set(record) == FIELDS
        assert all(isinstance(record[name], int) for name in FIELDS - {"machine", "minute", "reasons"})
        assert all(isinstance(ms, int) for ms in record["reasons"].values())
        assert dt.datetime.strptime(record["minute"], "%Y-%m-%dT%H:%M:00Z")
    assert any(record["reasons"] for record in export), "no record carries a reason code"

    counts = []
    for voucher in vouchers:
        claims = voucher["credentialSubject"]
        assert claims["evidence"]["record_schema"] == "valuegate/minute/v1"
        assert [machine["id"] for machine in claims["machines"]] == ["filler-10", "filler-9"]
        root, count = guide_root(export, claims)
        assert root == claims["evidence"]["merkle_root"], claims["voucher_id"]
        assert count == claims["evidence"]["records"], claims["voucher_id"]
        counts.append(count)

    # A minute wholly in planned stop has no record, so a day has fewer records than minutes.
    planned_only = [record for record in export if record["planned_stop_ms"] == 60_000]
    assert planned_only == []
    assert 0 < counts[0] < 2 * 1380
    assert 0 < counts[1] < 2 * 1440
    hours = [(utc(v["credentialSubject"]["period"]["end"]) - utc(v["credentialSubject"]["period"]["start"])) / dt.timedelta(hours=1) for v in vouchers]
    assert hours == [23, 24]


def test_guide_recipe_detects_changed_record(tmp_path: Path) -> None:
    vouchers, export = issue_vouchers(tmp_path)
    claims = vouchers[0]["credentialSubject"]
    first_minute = utc(claims["period"]["start"]).strftime("%Y-%m-%dT%H:%M:00Z")
    target = next(record for record in export if record["machine"] == "filler-9" and record["minute"] == first_minute)
    target["produced"] += 1

    root, _ = guide_root(export, claims)

    assert root != claims["evidence"]["merkle_root"]


@pytest.mark.parametrize("name", ["auditor-guide.md", "auditor-guide.zh-CN.md"])
def test_guide_states_recipe(name: str) -> None:
    text = (DOCS / name).read_text(encoding="utf-8")
    for field_name in FIELDS:
        assert f"`{field_name}`" in text, (name, field_name)
    for phrase in ("valuegate/minute/v1", "YYYY-MM-DDTHH:MM:00Z", "SHA-256(0x00 || JCS(", "SHA-256(0x01 || ",
                   "RFC 8785", "RFC 6962", "`period.start`", "`period.end`", "`records/<machine>.jsonl`", "/api/v1/vouchers/{voucher_id}/records",
                   "X-Record-Count", "npm install canonicalize@2.1.0",
                   "node verify_bundle.js bundle"):
        assert phrase in text, (name, phrase)


def test_guide_pins_peer_canonicalize() -> None:
    pinned = json.loads((Path(__file__).parents[1] / "peers" / "package.json").read_text())["dependencies"]["canonicalize"]
    for name in ("auditor-guide.md", "auditor-guide.zh-CN.md"):
        assert f"npm install canonicalize@{pinned}" in (DOCS / name).read_text(encoding="utf-8"), name


@pytest.mark.parametrize("name", ["auditor-guide.md", "auditor-guide.zh-CN.md"])
def test_guide_copies_every_verifier_file(name: str) -> None:
    """The copy command in the guide names exactly the files the second verifier loads, following its require calls."""
    text = (DOCS / name).read_text(encoding="utf-8")
    block = text[text.index("mkdir verifier") :]
    copied = set(re.findall(r"CHECKOUT/tests/peers/([\w.]+\.js)", block[: block.index("```")]))

    peers = Path(__file__).parents[1] / "peers"
    needed, waiting = set(), ["verify_bundle.js"]
    while waiting:
        script = waiting.pop()
        needed.add(script)
        waiting += [f"{module}.js" for module in re.findall(r"require\('\./([\w.]+)'\)", (peers / script).read_text()) if f"{module}.js" not in needed]

    assert copied == needed
