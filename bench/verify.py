"""Benchmark `valuegate verify` on a bundle with minute records: the streamed verifier against a plain scan that keeps the records in memory.

Run: .venv/bin/python bench/verify.py [--machines 10] [--days 60]

The edge pipeline issues signed vouchers for one OEE anchor over all
machines (14 baseline days, then one voucher a reporting day) from random
state changes and counter readings, and the cloud's bundle builder writes
them with every minute record into a ZIP file. Then two child processes
read that file, and the benchmark prints each one's wall time and peak
resident memory (ru_maxrss, which includes the interpreter and imports):

- verify: ``verify_bundle``, which checks every file, signature and chain
  link, rebuilds each voucher's evidence root and recomputes its figures.
  It must pass.
- reference: a plain scan that reads each record file into memory,
  decodes every line as a record and hashes it, and keeps the records and
  their leaf hashes, as a verifier that holds the records in memory does
  before any check.

Peak memory is VmHWM from /proc/self/status, the high-water mark of the
child's own address space (ru_maxrss would carry the parent's over exec).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ZONE = "Asia/Shanghai"
FIRST = dt.date(2026, 1, 1)
BASELINE_DAYS = 14
DAY_MS = 86_400_000


def _contract(machines: list[str], days: int) -> dict:
    baseline_end = FIRST + dt.timedelta(days=BASELINE_DAYS - 1)
    return {
        "schema": "valuegate/contract/v1", "id": "c-bench", "tenant": "acme", "customer": "Acme",
        "start": FIRST.isoformat(), "end": (FIRST + dt.timedelta(days=days + 30)).isoformat(),
        "anchors": [{
            "id": "oee-line", "scope": machines, "metric": "oee_points",
            "baseline": {"first_date": FIRST.isoformat(), "last_date": baseline_end.isoformat(), "min_days": 7},
            "reporting": {"first_date": (baseline_end + dt.timedelta(days=1)).isoformat(),
                          "last_date": (FIRST + dt.timedelta(days=days - 1)).isoformat()},
            "uncertainty": {"resamples": 200, "block_days": 1, "seed": 3},
        }],
    }  # fmt: skip


def _events(rng: random.Random, start: int, end: int) -> tuple[list, list]:
    """Return state changes (some with a reason code) and container counts of one machine over ``[start, end)``."""
    from valuegate.edge.spool_rows import CounterReading, StateEvent

    states, counters = [StateEvent(start, 0)], []
    at = start
    while (at := at + rng.randint(60_000, 3_600_000)) < end:
        code = rng.choice([0, 0, 0, 0, 1, 2, 3, 4])
        states.append(StateEvent(at, code, rng.choice(["17", "21", "急停"]) if code == 3 else None))
    count = 0
    for ts in range(start + 5_000, end, 20_000):
        count = (count + rng.randint(0, 15)) % 65536
        counters.append(CounterReading(ts, "containers", count))
    return states, counters


def generate(machines: int, days: int, folder: Path) -> tuple[Path, int, int]:
    """Issue the vouchers and write the bundle; return its path, the voucher count and the record count."""
    from valuegate.adapters.tagmap import load_tag_map, shipped_tag_map_dir
    from valuegate.cloud.bundle import GatewayKey, StoredVoucher, write_bundle
    from valuegate.edge import keys
    from valuegate.edge.issuer import VoucherSigner
    from valuegate.edge.minutes import MachineInfo
    from valuegate.edge.pipeline import Pipeline
    from valuegate.edge.protocol.contract import parse_contract
    from valuegate.edge.spool import Spool
    from valuegate.edge.spool_rows import MachineBatch

    ids = [f"filler-{number:02d}" for number in range(machines)]
    contract = _contract(ids, days)
    tag_map = load_tag_map(shipped_tag_map_dir() / "demo" / "bottling-filler-modbus.yaml")
    keys.create_key(folder / "keys")
    spool = Spool(folder / "spool.db")
    signer = VoucherSigner(folder / "keys", tenant="acme", site="s", gateway="gw-1")
    pipeline = Pipeline([MachineInfo(machine, tag_map, ZONE) for machine in ids], [parse_contract(contract)], signer)
    start = int(dt.datetime.combine(FIRST, dt.time(), dt.timezone(dt.timedelta(hours=8))).timestamp() * 1000)
    rng = random.Random(11)
    vouchers: list[dict] = []
    # A week at a time, as a gateway that closes days as they end.
    for week in range(0, days + 1, 7):
        low, high = start + week * DAY_MS, start + min(week + 7, days + 1) * DAY_MS
        for machine in ids:
            states, counters = _events(rng, low, high)
            spool.append([MachineBatch(machine, states, counters, high + 5_000)])
        for machine in ids:
            while (result := pipeline.step(spool, machine, now_ms=start)).minutes:
                vouchers += result.vouchers
    records = {machine: spool.minute_records(machine, start - DAY_MS, start + (days + 2) * DAY_MS) for machine in ids}
    count = sum(len(rows) for rows in records.values())
    public = keys.export_public(folder / "keys")["public_key_multibase"]
    path = write_bundle(
        folder / "bundle.zip", contract=contract, vouchers=vouchers, keys=[GatewayKey("gw-1", public)], documents=[],
        created_at="2026-12-01T00:00:00Z", stored=[StoredVoucher(v["credentialSubject"]["voucher_id"], "2026-12-01T00:00:00Z", True) for v in vouchers],
        records=records,
    )  # fmt: skip
    return path, len(vouchers), count


def child(mode: str, path: str) -> None:
    """Read the bundle in this process: ``verify`` or ``reference``."""
    import zipfile

    started = time.perf_counter()
    if mode == "verify":
        from valuegate.verify import verify_bundle

        report = verify_bundle(path)
        failed = [(v.subject, v.reasons[:2]) for v in report.verdicts if not v.ok]
        assert report.ok, failed[:5]
        detail = f"{report.evidence.recomputed} vouchers recomputed from {report.evidence.records} records"
    else:
        import msgspec

        from valuegate.edge.protocol.records import MinuteRecord

        decoder = msgspec.json.Decoder(MinuteRecord)
        records: list[MinuteRecord] = []
        leaves: list[bytes] = []
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if name.startswith("records/"):
                    lines = archive.read(name).splitlines()
                    records += [decoder.decode(line) for line in lines]
                    leaves += [hashlib.sha256(b"\x00" + line).digest() for line in lines]
        detail = f"{len(records)} records decoded and hashed"
    seconds = time.perf_counter() - started
    status = Path("/proc/self/status").read_text()
    peak_mb = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024
    print(f"{seconds:.3f} {peak_mb:.1f} {detail}")


def run_child(mode: str, path: Path) -> tuple[float, float, str]:
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--bundle", str(path)], check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "tests")})  # fmt: skip
    seconds, peak, detail = out.stdout.strip().splitlines()[-1].split(" ", 2)
    return float(seconds), float(peak), detail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=10)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--child", choices=("verify", "reference"))
    parser.add_argument("--bundle", default="")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.bundle)
        return
    if args.days <= BASELINE_DAYS:
        parser.error(f"--days {args.days}: give more than the {BASELINE_DAYS} baseline days, so that vouchers are issued")

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as scratch:
        started = time.perf_counter()
        path, vouchers, records = generate(args.machines, args.days, Path(scratch))
        print(f"bundle: {args.machines} machines x {args.days} days, {vouchers} vouchers, {records:,} records, "
              f"{path.stat().st_size / 1e6:.1f} MB ZIP, generated in {time.perf_counter() - started:.0f} s")
        verify = run_child("verify", path)
        reference = run_child("reference", path)
    print(f"verify:    {verify[0]:8.1f} s  peak RSS {verify[1]:8.1f} MB  ({verify[2]})")
    print(f"reference: {reference[0]:8.1f} s  peak RSS {reference[1]:8.1f} MB  ({reference[2]})")
    print(f"verify / reference: time {verify[0] / reference[0]:.2f}, peak RSS {verify[1] / reference[1]:.2f}")


if __name__ == "__main__":
    main()
