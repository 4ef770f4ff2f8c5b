"""Edge agent benchmarks: voucher signing rate, outbox-to-acknowledged-store rate, and memory of a month's replay.

Run: .venv/bin/python bench/edge.py [--machines 50] [--days 30] [--vouchers 2000]

1. Signing: full vouchers (claims, RFC 8785, eddsa-jcs-2022) per second on
   one core, printed as a ratio to bare Ed25519 signatures of 64 bytes
   measured in the same run.
2. Delivery: vouchers issued into the spool's outbox, published over a real
   Mosquitto broker, checked and stored by the product's ingest worker in a
   real PostgreSQL, and acknowledged back, per second end to end.
3. Replay: a month of 50 machines through the spool and the pipeline
   (minute records, plant days, one voucher per machine and reporting day)
   without a broker. It prints machine-days per second and the peak
   resident memory against the resident memory right after start-up.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import random
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1048576


class RssSampler:
    """Samples resident memory every 50 ms on a background thread and keeps the peak."""

    def __init__(self) -> None:
        self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_mb())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def bench_signing(count: int) -> None:
    from edge.helpers import synthetic_body

    from valuegate.edge.issuer import claims_from
    from valuegate.edge.jcs import sign_and_hash
    from valuegate.edge.protocol.keys import verification_method
    from valuegate.edge.protocol.voucher import build_voucher, voucher_hash

    key = Ed25519PrivateKey.generate()
    message = os.urandom(64)
    started = time.perf_counter()
    for _ in range(count):
        key.sign(message)
    raw_rate = count / (time.perf_counter() - started)

    body = synthetic_body("2026-03-01")

    def run(sign, digest) -> float:  # noqa: ANN001
        prev = None
        started = time.perf_counter()
        for seq in range(1, count + 1):
            claims = claims_from(body, tenant="acme", site="suzhou", gateway="gw-1", seq=seq, prev=prev, issued_at="2026-03-02T00:05:00Z")
            prev = digest(sign(claims, key))
        return count / (time.perf_counter() - started)

    public_method = verification_method(key.public_key())

    def sign_fast(claims, key):  # noqa: ANN001, ANN202
        return sign_and_hash(claims, key, method=public_method, issuer=public_method.partition("#")[0])

    fast = run(sign_fast, lambda signed: signed[1])
    reference = run(build_voucher, voucher_hash)
    print(
        f"signing: {fast:,.0f} vouchers/s on one core (claims, sign, chain hash; edge.jcs); "
        f"protocol reference (rfc8785 package) {reference:,.0f}/s; bare Ed25519 of 64 bytes {raw_rate:,.0f}/s; "
        f"fast / bare Ed25519 = {fast / raw_rate:.2f}, fast / reference = {fast / reference:.1f}x"
    )


async def bench_delivery(count: int) -> None:
    import psycopg
    from edge.helpers import issue_synthetic, load

    from valuegate.cloud import db, store
    from valuegate.cloud.ingest import IngestWorker
    from valuegate.cloud.settings import CloudSettings
    from valuegate.edge import keys, outbox
    from valuegate.edge.issuer import VoucherSigner
    from valuegate.edge.metrics import AgentMetrics
    from valuegate.edge.publish import Publisher
    from valuegate.edge.spool import SpoolThread
    from valuegate.services import MosquittoServer, PostgresServer

    with tempfile.TemporaryDirectory() as folder, MosquittoServer() as broker, PostgresServer() as postgres:
        db.migrate(postgres.dsn)
        config = load(Path(folder), broker.port, publish={"window": 100, "ack_timeout_s": 30})
        key = keys.create_key(config.state_path / "keys")
        async with await psycopg.AsyncConnection.connect(postgres.dsn, options=db.UTC_OPTIONS) as conn, conn.transaction():
            await store.create_tenant(conn, "acme", "Acme")
            await store.create_site(conn, "acme", "suzhou", "Suzhou", "UTC")
            await store.create_gateway(conn, "acme", "suzhou", "gw-1")
            await store.add_gateway_key(conn, "acme", "gw-1", key.verification_method, valid_from=dt.datetime(2025, 1, 1, tzinfo=dt.UTC))

        settings = CloudSettings(dsn=postgres.dsn, mqtt_port=broker.port, share_group="bench")
        async with SpoolThread(config.state_path / "spool.db") as spool, IngestWorker(settings):
            signer = VoucherSigner(config.state_path / "keys", tenant="acme", site="suzhou", gateway="gw-1")
            publisher = Publisher(config, spool, AgentMetrics(), instance="bench")
            task = asyncio.create_task(publisher.run())
            while not (publisher.connected and publisher._current is not None and publisher._current.online):
                await asyncio.sleep(0.05)
            now_ms = int(time.time() * 1000)
            started = time.perf_counter()
            await spool.call(lambda s: issue_synthetic(s, signer, count, first_date="2020-01-01", now_ms=now_ms))
            issued = time.perf_counter() - started
            started = time.perf_counter()
            publisher.notify()
            while (await spool.call(outbox.outbox_stats))["depth"]:
                await asyncio.sleep(0.02)
            elapsed = time.perf_counter() - started
            publisher.stop()
            await task
        print(
            f"delivery: {count} vouchers from the outbox, published, checked and stored by the ingest worker in PostgreSQL "
            f"and acknowledged back: {count / elapsed:,.0f} vouchers/s ({elapsed:.2f} s); the issuing before it, with one "
            f"FULL-sync transaction per anchor day as the test helper stores them, ran at {count / issued:,.0f}/s"
        )


def bench_replay(machines: int, days: int) -> None:
    from edge.test_pipeline import CONTRACT

    from valuegate.adapters.tagmap import load_tag_map, shipped_tag_map_dir
    from valuegate.edge import keys, kernels
    from valuegate.edge.issuer import VoucherSigner
    from valuegate.edge.pipeline import MachineInfo, Pipeline
    from valuegate.edge.protocol.contract import parse_contract
    from valuegate.edge.spool import CounterReading, MachineBatch, Spool, StateEvent

    kernels.warm_up()
    tag_map = load_tag_map(shipped_tag_map_dir() / "demo" / "bottling-filler-modbus.yaml")
    ids = [f"m{index:02d}" for index in range(machines)]
    contract = dict(CONTRACT)
    contract["anchors"] = [
        {**CONTRACT["anchors"][0], "id": f"oee-{machine}", "scope": [machine], "baseline": {**CONTRACT["anchors"][0]["baseline"], "min_days": 1}}
        for machine in ids
    ]
    t0 = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as folder:
        keys.create_key(Path(folder) / "keys")
        spool = Spool(Path(folder) / "spool.db")
        signer = VoucherSigner(Path(folder) / "keys", tenant="acme", site="s", gateway="gw-1")
        pipeline = Pipeline([MachineInfo(machine, tag_map, "UTC") for machine in ids], [parse_contract(contract)], signer)
        base = rss_mb()
        vouchers = 0
        started = time.perf_counter()
        with RssSampler() as sampler:
            counts = dict.fromkeys(ids, 0)
            for hour in range(days * 24):
                batches = []
                for machine in ids:
                    start = t0 + hour * 3_600_000
                    states = [StateEvent(start + offset, rng.choice((0, 0, 0, 1, 3)), "17") for offset in sorted(rng.sample(range(3_600_000), 12))]
                    counters = []
                    for minute in range(60):
                        counts[machine] = (counts[machine] + rng.randint(0, 40)) % 65536
                        counters.append(CounterReading(start + minute * 60_000 + 500, "containers", counts[machine]))
                    batches.append(MachineBatch(machine, states, counters, start + 3_600_000))
                spool.append(batches)
                for machine in ids:
                    vouchers += len(pipeline.step(spool, machine, now_ms=t0).vouchers)
                if hour % 24 == 23:
                    # Published and acknowledged telemetry would leave the spool; mark it so, as the publisher would.
                    spool.db.execute("UPDATE minutes SET published = 1, published_ms = 0, covered = 1")
                    spool.prune(10**12, now_ms=10**13, retention_ms=0)
        elapsed = time.perf_counter() - started
    machine_days = machines * days
    print(
        f"replay: {machines} machines x {days} days = {machine_days} machine-days ({machine_days * 1440:,} minute records, "
        f"{vouchers} vouchers) in {elapsed:.1f} s = {machine_days / elapsed:.1f} machine-days/s; "
        f"resident memory {base:.0f} MB after start-up, peak {sampler.peak:.0f} MB ({sampler.peak / base:.2f}x), "
        f"ru_maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vouchers", type=int, default=2000, help="vouchers to sign and to deliver")
    parser.add_argument("--machines", type=int, default=50, help="machines in the replay")
    parser.add_argument("--days", type=int, default=30, help="days in the replay")
    parser.add_argument("--skip", action="append", default=[], choices=["signing", "delivery", "replay"], help="skip a part")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.platform()}")
    if "signing" not in args.skip:
        bench_signing(args.vouchers)
    if "delivery" not in args.skip:
        asyncio.run(bench_delivery(args.vouchers))
    if "replay" not in args.skip:
        bench_replay(args.machines, args.days)


if __name__ == "__main__":
    main()
