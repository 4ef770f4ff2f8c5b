"""End to end: recorded days through simulators, adapters, the edge, a real broker and the cloud on real PostgreSQL.

The expected figures are computed here, independently of the simulators'
loaders and the edge kernels, straight from the shipped recording files.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import subprocess
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest

from tests.recorded import bottling_window_and_stops
from tests.verify.test_evidence_guide import guide_root
from valuegate.cloud import record_export
from valuegate.cloud.renewal.service import contract_bundle
from valuegate.demo.report import collect_report
from valuegate.demo.stack import DemoOptions, running_stack
from valuegate.services import MosquittoServer, PostgresServer
from valuegate.verify import verify_bundle

pytestmark = [pytest.mark.mosquitto, pytest.mark.postgres, pytest.mark.slow]

RECORDINGS = Path(__file__).resolve().parents[2] / "simulators" / "recordings"
PEERS = Path(__file__).resolve().parents[1] / "peers"
NEW_YORK = ZoneInfo("America/New_York")
BOTTLING_DAYS = [date(2022, 7, 22), date(2022, 7, 26), date(2022, 8, 1)]
MAZAK_DAYS = [date(2016, 5, 2), date(2016, 5, 3)]

BOTTLING_CONTRACT = """
schema: valuegate/contract/v1
id: E2E-BOTTLING
tenant: demo
customer: test
start: 2022-07-01
end: 2022-12-31
anchors:
  - id: filler-downtime
    scope: [filler-01]
    metric: unplanned_downtime_rate
    baseline: {first_date: 2022-07-22, last_date: 2022-07-26, min_days: 2}
    reporting: {first_date: 2022-07-27, last_date: 2022-08-01}
    uncertainty: {resamples: 200, block_days: 1, seed: 5}
    price: {per: avoided_minute, amount: "10.00"}
"""
MACHINING_CONTRACT = """
schema: valuegate/contract/v1
id: E2E-MACHINING
tenant: demo
customer: test
start: 2016-05-01
end: 2016-06-30
anchors:
  - id: mazak-availability
    scope: [mazak-03]
    metric: availability_points
    baseline: {first_date: 2016-05-02, last_date: 2016-05-02, min_days: 1}
    reporting: {first_date: 2016-05-03, last_date: 2016-05-03}
    sufficiency: {min_planned_busy_min: 60, max_offline_share: 1.0}
    uncertainty: {resamples: 200, block_days: 1, seed: 5}
    price: {per: availability_point_day, amount: "100.00"}
"""


def _expected_mazak_counter_min(day: date) -> dict[str, float]:
    """Return the day's auto_time and total_time increments in minutes, read from the raw SHDR lines."""
    day_start = datetime(day.year, day.month, day.day, tzinfo=NEW_YORK)
    day_end = day_start + timedelta(days=1)
    readings: dict[str, list[float]] = {"auto_time": [], "total_time": []}
    for path in sorted((RECORDINGS / "nist-mazak03-week").glob("Mazak03-*.txt.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                fields = line.rstrip("\n").split("|")
                stamp = datetime.fromisoformat(fields[0].replace("Z", "+00:00"))
                if not day_start <= stamp < day_end:
                    continue
                for name, value in zip(fields[1::2], fields[2::2], strict=False):
                    if name in readings and value != "UNAVAILABLE":
                        readings[name].append(float(value))
    return {name: (values[-1] - values[0]) / 60 for name, values in readings.items()}


def _stored_documents(dsn: str) -> list[dict]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return [row[0] for row in conn.execute("SELECT document FROM vouchers ORDER BY seq")]


def _voucher_records(stack: object, documents: list[dict]) -> dict[str, tuple[str, str, bytes]]:
    """Fetch each voucher's records from the API: content type, record count header and body."""
    fetched = {}
    for document in documents:
        voucher_id = document["credentialSubject"]["voucher_id"]
        request = urllib.request.Request(f"{stack.api_url}/api/v1/vouchers/{voucher_id}/records", headers={"Authorization": f"Bearer {stack.token}"})
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - the loopback API the test started
            fetched[voucher_id] = (response.headers["Content-Type"], response.headers["X-Record-Count"], response.read())
    return fetched


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer) -> Iterator[dict]:
    """Run the chain once for the module and return the demo report plus the stored voucher documents."""
    folder = tmp_path_factory.mktemp("chain")
    (folder / "bottling.yaml").write_text(BOTTLING_CONTRACT, encoding="utf-8")
    (folder / "machining.yaml").write_text(MACHINING_CONTRACT, encoding="utf-8")
    name = "e2e_" + uuid.uuid4().hex[:8]
    admin = f"postgresql://{postgres_server.user}@127.0.0.1:{postgres_server.port}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with MosquittoServer() as broker:
        options = DemoOptions(
            state_dir=folder / "state",
            bottling_days=len(BOTTLING_DAYS),
            mazak_days=len(MAZAK_DAYS),
            broker=("127.0.0.1", broker.port),
            database=f"postgresql://{postgres_server.user}@127.0.0.1:{postgres_server.port}/{name}",
            contracts=(folder / "bottling.yaml", folder / "machining.yaml"),
        )

        async def run() -> dict:
            async with running_stack(options) as stack:
                result = await asyncio.to_thread(collect_report, stack)
                result["documents"] = await asyncio.to_thread(_stored_documents, stack.dsn)
                result["records"] = await asyncio.to_thread(_voucher_records, stack, result["documents"])
                result["bundles"] = {}
                async with await psycopg.AsyncConnection.connect(stack.dsn) as conn:
                    for contract_id in ("E2E-BOTTLING", "E2E-MACHINING"):
                        result["bundles"][contract_id] = await contract_bundle(conn, "demo", contract_id)
                    # The same bundle with records fetched an hour at a time instead of a week, to compare the bytes.
                    at = datetime(2026, 1, 1, tzinfo=ZoneInfo("UTC"))
                    result["weekly"] = await contract_bundle(conn, "demo", "E2E-BOTTLING", created_at=at)
                    with pytest.MonkeyPatch.context() as patch:
                        patch.setattr(record_export, "_CHUNK", timedelta(hours=1))
                        result["hourly"] = await contract_bundle(conn, "demo", "E2E-BOTTLING", created_at=at)
                return result

        yield asyncio.run(run())
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_chain_reproduces_recorded_days(report: dict) -> None:
    machines = {machine["id"]: machine for machine in report["machines"]}

    # Bottling: per day, planned busy time is the production window and
    # unplanned downtime is the sum of the stops replayed inside it.
    bottling = {day["date"]: day for day in machines["filler-01"]["days"]}
    assert sorted(bottling) == [day.isoformat() for day in BOTTLING_DAYS]
    for day in BOTTLING_DAYS:
        window_min, stop_min = bottling_window_and_stops(day)
        computed = bottling[day.isoformat()]
        assert computed["planned_min"] == pytest.approx(window_min, abs=0.02), day
        assert computed["downtime_min"] == pytest.approx(stop_min, abs=0.02), day
        assert computed["run_min"] == pytest.approx(window_min - stop_min, abs=0.02), day

    # Mazak: run time per day agrees with the controller's auto_time counter
    # within 1%, and planned busy time (powered time) with total_time.
    mazak = {day["date"]: day for day in machines["mazak-03"]["days"]}
    for day in MAZAK_DAYS:
        counters = _expected_mazak_counter_min(day)
        computed = mazak[day.isoformat()]
        assert computed["run_min"] == pytest.approx(counters["auto_time"], rel=0.01), day
        assert computed["planned_min"] == pytest.approx(counters["total_time"], rel=0.01), day


def test_chain_stores_every_voucher_once_verified(report: dict) -> None:
    counts = report["vouchers"]
    # Reporting days: 2022-07-27 .. 2022-08-01 for the filler and 2016-05-03 for the Mazak.
    assert counts["issued"] == 6 + 1
    assert counts["stored"] == counts["issued"]
    assert counts["verified"] == counts["issued"]
    assert counts["reproduced"] == counts["issued"]
    assert counts["gap"] == 0
    assert counts["rejected"] == 0
    assert report["chain"]["stored_through"] == counts["issued"]
    seqs = [document["credentialSubject"]["seq"] for document in report["documents"]]
    assert seqs == list(range(1, counts["issued"] + 1))


@pytest.mark.peer
def test_stored_vouchers_verify_with_node(report: dict, node_peers: Path) -> None:
    assert report["documents"]
    for document in report["documents"]:
        result = subprocess.run(
            ["node", str(PEERS / "verify_voucher.js")], input=json.dumps(document).encode(), capture_output=True, cwd=PEERS, timeout=30, check=False
        )
        assert result.stdout.decode().strip() == "valid", document["credentialSubject"]["voucher_id"]


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "piped"])
def test_printed_report_keeps_every_date_whole_at_80_columns(report: dict, terminal: bool) -> None:
    import copy
    import io

    from rich.console import Console

    from valuegate.cloud.web.i18n import format_date
    from valuegate.demo.render import print_report

    # Every day carries the recording's own figures, the widest column, as the bottling days do.
    report = copy.deepcopy(report)
    for machine in report["machines"]:
        for day in machine["days"]:
            day["published"] = {"pause_min": 225.02, "efficiency": 0.5745}
    for language in ("zh-CN", "en"):
        out = io.StringIO()
        print_report(report, Console(file=out, width=80, force_terminal=terminal, color_system=None), language)
        # Table rows only: the findings below the tables name dates too.
        first_cells = [line.split("│")[1].strip() for line in out.getvalue().splitlines() if line.startswith("│")]
        for machine in report["machines"]:
            for day in machine["days"]:
                # Chinese tables write dates as the web pages do (2022年7月27日), English ones as ISO dates.
                shown = format_date(day["date"], language)
                assert shown in first_cells, (language, shown, first_cells[:3])


@pytest.mark.parametrize("contract_id", ["E2E-BOTTLING", "E2E-MACHINING"])
def test_bundle_records_recompute_every_voucher(report: dict, contract_id: str, tmp_path: Path) -> None:
    """The bundle carries the stored minute records, and the offline verifier rebuilds each voucher's root and figures from them."""
    path = tmp_path / "bundle.zip"
    path.write_bytes(report["bundles"][contract_id])
    own = [d for d in report["documents"] if d["credentialSubject"]["contract"] == contract_id]

    checked = verify_bundle(path)

    assert checked.ok, [(v.subject, v.reasons) for v in checked.verdicts if not v.ok]
    assert checked.evidence.recomputed == len(own) > 0
    assert checked.evidence.failed == 0
    claimed = sum(d["credentialSubject"]["evidence"]["records"] for d in own)
    assert checked.evidence.records >= claimed


def test_bundle_records_same_in_any_chunk(report: dict) -> None:
    """Records are fetched and compressed a chunk at a time; the chunk size changes nothing in the bundle."""
    with zipfile.ZipFile(io.BytesIO(report["hourly"])) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    # Hourly chunks cut these records into many queries, while a weekly chunk takes each span in one.
    assert sum(entry["records"] for entry in manifest["records"]) > 10 * 60
    assert report["hourly"] == report["weekly"]


def test_bundle_detects_changed_record(report: dict, tmp_path: Path) -> None:
    """One record changed by one part, with its file digest and count kept consistent, fails the voucher whose day contains it."""
    folder = tmp_path / "bundle"
    with zipfile.ZipFile(io.BytesIO(report["bundles"]["E2E-MACHINING"])) as archive:
        archive.extractall(folder)
    (voucher,) = [d for d in report["documents"] if d["credentialSubject"]["contract"] == "E2E-MACHINING"]
    period = voucher["credentialSubject"]["period"]
    manifest = json.loads((folder / "manifest.json").read_text())
    (entry,) = manifest["records"]
    path = folder / entry["file"]
    lines = path.read_bytes().splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if period["start"] <= json.loads(line)["minute"] < period["end"]
                 and json.loads(line)["running_ms"] > 0)
    record = json.loads(lines[index])
    record["running_ms"] -= 1000
    record["idle_ms"] += 1000
    lines[index] = json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    path.write_bytes(b"".join(lines))
    manifest["files"][entry["file"]] = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))

    checked = verify_bundle(folder)

    (failed,) = [v for v in checked.vouchers if not v.ok]
    assert failed.subject == voucher["credentialSubject"]["voucher_id"]
    assert failed.reasons[0].startswith("evidence: the bundle's ")
    assert voucher["credentialSubject"]["evidence"]["merkle_root"] in failed.reasons[0]
    assert checked.evidence.failed == 1


def test_api_serves_records_behind_each_root(report: dict) -> None:
    """The records the API serves for a voucher rebuild its evidence root by the auditor guide's recipe, which shares no valuegate code."""
    for document in report["documents"]:
        claims = document["credentialSubject"]
        content_type, count, body = report["records"][claims["voucher_id"]]
        export = [json.loads(line) for line in body.splitlines()]

        assert content_type.startswith("application/x-ndjson")
        assert int(count) == len(export) == claims["evidence"]["records"]
        assert guide_root(export, claims) == (claims["evidence"]["merkle_root"], claims["evidence"]["records"])
