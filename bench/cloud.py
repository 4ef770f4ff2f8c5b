"""Cloud benchmarks: voucher ingest per worker, telemetry rows stored, contract value endpoint latency.

Run: .venv/bin/python bench/cloud.py [--machines-per-voucher N] [--vouchers N] [--telemetry-rows N] [--anchors N] [--days N] [--parts ...]

Each figure is printed with a reference measured in the same run:
- ingest: the protocol's reference verifier (rfc8785 + verify_voucher + voucher_hash) alone;
- ingest through Mosquitto: the same publisher to a bare paho subscriber that only counts;
- telemetry: a bare COPY of the same rows into an unindexed table;
- value endpoint: the SQL that reads the contract's voucher rows, without pricing or HTTP.
The script starts its own PostgreSQL and Mosquitto on loopback ports and stops them.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import glob
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import httpx
import msgspec
import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from valuegate.cloud import db
from valuegate.cloud.admin import Admin
from valuegate.cloud.app import ApiServer
from valuegate.cloud.chain import load_gateways
from valuegate.cloud.ingest import IngestWorker, _Message
from valuegate.cloud.reports import _VALUE_SQL
from valuegate.cloud.settings import CloudSettings
from valuegate.cloud.telemetry import check_batch, store_batches
from valuegate.cloud.verify import check_voucher, parse_topic
from valuegate.edge.protocol import voucher as v
from valuegate.edge.protocol.keys import public_key_multibase
from valuegate.edge.protocol.records import TELEMETRY_SCHEMA, MinuteRecord
from valuegate.services import MosquittoServer, PostgresServer

from bench_db import fresh_database, machine_line

TENANT, SITE = "bench", "plant"


MACHINES_PER_VOUCHER = 1


def claims(gateway: str, seq: int, prev: str | None, day: dt.date, anchor: str) -> v.Claims:
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC) - dt.timedelta(hours=8)
    stamp = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    return v.Claims(
        schema=v.SCHEMA, voucher_id=v.voucher_id(gateway, seq), tenant=TENANT, site=SITE, gateway=gateway, seq=seq, prev=prev,
        contract="c-bench", anchor=anchor,
        machines=[v.MachineRef(id=f"{anchor}-m{i}", mapping_hash="sha256:" + "0" * 64, time_source="plc", ideal_cycle_time_s=2.5) for i in range(MACHINES_PER_VOUCHER)],
        period=v.Period(start=stamp(start), end=stamp(start + dt.timedelta(days=1)), plant_date=day.isoformat(), time_zone="Asia/Shanghai"),
        metric=v.Metric(name="oee_points", unit="percentage_points", better="higher"),
        reporting=v.Reporting(value=71.234567, planned_busy_min=13200.0, run_min=11800.5, unplanned_downtime_min=620.25, availability=0.893977,
                              effectiveness=0.91, quality=0.987, oee=0.71234567, running_day=True),
        baseline=v.Baseline(value=67.5, days=30, first_date="2025-01-01", last_date="2025-01-30", digest="sha256:" + "cd" * 32),
        delta=v.Delta(quantity="oee_points", point=3.734567, low=2.1, high=5.2, confidence=0.95, method="bootstrap", resamples=2000, seed=7),
        sufficiency=v.Sufficiency(ok=True, reasons=[], covered_min=14100.0),
        evidence=v.Evidence(merkle_root="sha256:" + "ab" * 32, records=14400, record_schema="valuegate/minute/v1"),
        issued_at=stamp(start + dt.timedelta(days=1, minutes=5)),
    )  # fmt: skip


def make_vouchers(count: int, gateways: list[tuple[str, Ed25519PrivateKey]]) -> list[tuple[str, bytes]]:
    out = []
    per = count // len(gateways)
    for gateway, key in gateways:
        prev = None
        for seq in range(1, per + 1):
            document = v.build_voucher(claims(gateway, seq, prev, dt.date(2025, 2, 1) + dt.timedelta(days=seq % 300), "a0"), key)
            prev = v.voucher_hash(document)
            out.append((f"valuegate/v1/{TENANT}/{SITE}/{gateway}/vouchers", msgspec.json.encode(document)))
    return out


def _server_cpu_s(pid: int | None) -> float:
    """Return the CPU seconds that process ``pid`` and its running children have used, from /proc, or NaN without /proc."""
    if pid is None or not os.path.isdir("/proc"):
        return float("nan")
    total = 0.0
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as file:
                fields = file.read().rpartition(")")[2].split()
        except OSError:
            continue  # the process ended meanwhile
        # Fields after the command name: state, ppid, ..., utime and stime at positions 11 and 12, in clock ticks.
        if int(fields[1]) == pid or stat == f"/proc/{pid}/stat":
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def bench_ingest(dsn: str, count: int, server_pid: int | None = None) -> dict[str, float]:
    keys = [(f"gw{i}", Ed25519PrivateKey.generate()) for i in range(20)]
    async with Admin(dsn) as admin:
        for gateway, key in keys:
            await admin.create_gateway(TENANT, SITE, gateway)
            await admin.add_key(TENANT, gateway, public_key_multibase(key.public_key()), valid_from=dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    messages = make_vouchers(count, keys)

    # Reference: the protocol's own parse, verify and hash, no storage.
    started = time.perf_counter()
    for _topic, payload in messages[:1000]:
        document, _ = v.parse_voucher(payload)
        assert v.verify_voucher(document).ok
        v.voucher_hash(document)
    reference_rate = 1000 / (time.perf_counter() - started)

    async with await psycopg.AsyncConnection.connect(dsn, options=db.UTC_OPTIONS) as conn:
        gateways = await load_gateways(conn, {g for g, _ in keys})
    now = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    for topic, payload in messages:
        check_voucher(payload, parse_topic(topic), gateways, now=now, clock_skew=dt.timedelta(minutes=5))
    verify_rate = len(messages) / (time.perf_counter() - started)

    settings = CloudSettings(dsn=dsn, ingest_batch=500)
    worker = IngestWorker(settings)
    worker._pool = await db.open_pool(dsn, min_size=1, max_size=2)
    # CPU time per voucher depends much less than the rate on what else runs on the machine.
    started, cpu_started, server_started = time.perf_counter(), time.process_time(), _server_cpu_s(server_pid)
    for i in range(0, len(messages), settings.ingest_batch):
        await worker.process([_Message(t, p, 0, 0) for t, p in messages[i : i + settings.ingest_batch]])
    stored_rate = len(messages) / (time.perf_counter() - started)
    worker_cpu = (time.process_time() - cpu_started) / len(messages)
    server_cpu = (_server_cpu_s(server_pid) - server_started) / len(messages)
    await worker._pool.close()
    return {
        "reference_verify_per_s": reference_rate,
        "verify_per_s": verify_rate,
        "verify_and_store_per_s": stored_rate,
        "worker_cpu_us": worker_cpu * 1e6,
        "server_cpu_us": server_cpu * 1e6,
    }


_PUBLISHER = """
import sys, msgspec, paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
messages = msgspec.msgpack.decode(open(sys.argv[1], "rb").read())
client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-gateway", protocol=mqtt.MQTTv5)
client.max_inflight_messages_set(1000)
client.connect("127.0.0.1", int(sys.argv[2]))
client.loop_start()
infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
for info in infos:
    info.wait_for_publish(60)
client.disconnect()
client.loop_stop()
"""


async def _publish(spool: str, broker_port: int) -> asyncio.subprocess.Process:
    # The gateway side publishes from its own process, so that it does not share this process's CPU time.
    return await asyncio.create_subprocess_exec(sys.executable, "-c", _PUBLISHER, spool, str(broker_port))


async def _timed_run(broker_port: int, spool: str, client_id: str, topic: str, finished: Any) -> float:
    """Subscribe to ``topic``, publish the spool and return the seconds until ``finished(message)`` first holds."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_message(_c: Any, _u: Any, message: Any) -> None:
        if finished(message):
            loop.call_soon_threadsafe(done.set)

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.on_message = on_message
    client.connect("127.0.0.1", broker_port)
    client.loop_start()
    client.subscribe(topic, qos=1)
    await asyncio.sleep(0.2)
    try:
        started = time.perf_counter()
        publisher = await _publish(spool, broker_port)
        await asyncio.wait_for(done.wait(), timeout=600)
        elapsed = time.perf_counter() - started
        await publisher.wait()
    finally:
        client.disconnect()
        client.loop_stop()
    return elapsed


async def bench_ingest_mqtt(dsn: str, broker_port: int, count: int) -> dict[str, float]:
    """Vouchers per second through Mosquitto and one worker, publish to last ack, and the broker alone with a bare subscriber."""
    key = Ed25519PrivateKey.generate()
    async with Admin(dsn) as admin:
        await admin.create_gateway(TENANT, SITE, "gw-mqtt")
        await admin.add_key(TENANT, "gw-mqtt", public_key_multibase(key.public_key()), valid_from=dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    messages = make_vouchers(count, [("gw-mqtt", key)])
    with tempfile.NamedTemporaryFile(suffix=".msgpack", delete=False) as spool:
        spool.write(msgspec.msgpack.encode(messages))
    try:
        # Reference: the same publisher to a bare paho subscriber that only counts. The subscription and
        # QoS match a worker's, and paho acknowledges each message as it arrives.
        received = 0

        def counted(_message: Any) -> bool:
            nonlocal received
            received += 1
            return received == count

        share = f"$share/bench-ref/valuegate/v1/{TENANT}/{SITE}/+/vouchers"
        broker_alone = await _timed_run(broker_port, spool.name, "bench-counter", share, counted)

        settings = CloudSettings(dsn=dsn, mqtt_port=broker_port, ingest_batch=500, reproduce_interval_s=3600)
        acks = f"valuegate/v1/{TENANT}/{SITE}/gw-mqtt/ack"
        async with IngestWorker(settings):
            # This process's CPU time covers the worker with its MQTT client; the publisher runs in another process.
            cpu_started = time.process_time()
            worker = await _timed_run(broker_port, spool.name, "bench-pub", acks, lambda m: json.loads(m.payload)["stored_through"] >= count)
            worker_cpu = time.process_time() - cpu_started
    finally:
        os.unlink(spool.name)
    return {"worker_per_s": count / worker, "broker_alone_per_s": count / broker_alone, "worker_cpu_us": worker_cpu / count * 1e6}


async def bench_telemetry(dsn: str, rows: int) -> dict[str, float]:
    async with Admin(dsn) as admin:
        await admin.create_gateway(TENANT, SITE, "gw-tel")
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    machines = max(1, rows // 1440)
    payloads = []
    for m in range(machines):
        records = [
            MinuteRecord(f"tm{m}", (start + dt.timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:00Z"), 50_000, 0, 0, 10_000, 0, 0, 20, 1, 1, {"E7": 10_000}, 0)
            for i in range(1440)
        ]
        body = {"schema": TELEMETRY_SCHEMA, "tenant": TENANT, "site": SITE, "gateway": "gw-tel", "records": records}
        payloads.append(msgspec.json.encode(body))
    total = machines * 1440
    topic = parse_topic(f"valuegate/v1/{TENANT}/{SITE}/gw-tel/telemetry")

    async with await psycopg.AsyncConnection.connect(dsn, options=db.UTC_OPTIONS) as conn:
        gateways = await load_gateways(conn, {"gw-tel"})
        started = time.perf_counter()
        for i in range(0, len(payloads), 10):
            async with conn.transaction():
                await store_batches(conn, [check_batch(p, topic, gateways) for p in payloads[i : i + 10]])
        rate = total / (time.perf_counter() - started)

        # Reference: COPY of the same values into an unindexed table, no decoding or checks.
        await conn.execute("CREATE UNLOGGED TABLE copy_ref (LIKE telemetry)")
        rows_ref = [(TENANT, f"tm{m}", start + dt.timedelta(minutes=i), start.date(), SITE, "gw-tel", 50_000, 0, 0, 10_000, 0, 0, 20, 1, 1, '{"E7": 10000}', 0)
                    for m in range(machines) for i in range(1440)]  # fmt: skip
        started = time.perf_counter()
        async with conn.cursor() as cur, cur.copy("COPY copy_ref FROM STDIN") as copy:
            for row in rows_ref:
                await copy.write_row(row)
        await conn.commit()
        reference = total / (time.perf_counter() - started)
    return {"rows": total, "rows_per_s": rate, "reference_copy_rows_per_s": reference}


async def bench_value(dsn: str, anchors: int, days: int, requests: int) -> dict[str, float]:
    """p50/p99 of GET /contracts/{id}/value for ``anchors`` anchors of 10 machines, one voucher per anchor-day."""
    anchor_yaml = "\n".join(
        f"  - {{id: a{a}, scope: [{', '.join(f'a{a}-m{i}' for i in range(10))}], metric: oee_points,"
        f" baseline: {{first_date: 2024-01-01, last_date: 2024-01-30, min_days: 10}},"
        f" reporting: {{first_date: 2025-01-01, last_date: 2025-12-31}}, price: {{per: oee_point_day, amount: '125.50'}}, cap: '40000'}}"
        for a in range(anchors)
    )
    contract = f"schema: valuegate/contract/v1\nid: c-bench\ntenant: {TENANT}\ncustomer: Bench\nstart: 2025-01-01\nend: 2025-12-31\nanchors:\n{anchor_yaml}\n"
    async with Admin(dsn) as admin:
        await admin.upload_contract(TENANT, contract)
        await admin.create_user(TENANT, "bench-csm", ["csm"])
        token = await admin.issue_token(TENANT, "bench-csm")

    # Rows are written directly: the endpoint reads columns only, and signing 365 x anchors vouchers would dominate the run.
    day0 = dt.date(2025, 1, 1)
    async with await psycopg.AsyncConnection.connect(dsn, options=db.UTC_OPTIONS) as conn:
        async with conn.cursor() as cur:
            async with cur.copy(
                "COPY vouchers (voucher_id, tenant_id, site_id, gateway_id, seq, contract_id, anchor_id, period_start, period_end, plant_date,"
                " metric, quantity, delta_point, delta_low, delta_high, reporting_value, baseline_value, running_day, sufficient,"
                " evidence_root, evidence_records, issued_at, issuer, document) FROM STDIN"
            ) as copy:
                for a in range(anchors):
                    for d in range(days):
                        start = dt.datetime.combine(day0 + dt.timedelta(days=d), dt.time(), dt.UTC) - dt.timedelta(hours=8)
                        await copy.write_row((f"gv{a}:{d + 1}", TENANT, SITE, f"gv{a}", d + 1, "c-bench", f"a{a}", start, start + dt.timedelta(days=1),
                                              day0 + dt.timedelta(days=d), "oee_points", "oee_points", f"{(d % 13) * 0.25 - 0.5}", "0.1", "3.0",
                                              "70.1", "67.5", d % 7 != 6, d % 11 != 10, "sha256:x", 14400, start, "did:key:x", "{}"))  # fmt: skip
            async with cur.copy("COPY voucher_chain (gateway_id, seq, voucher_id, tenant_id, contract_id, anchor_id, hash, prev, period_start, reproduced) FROM STDIN") as copy:
                for a in range(anchors):
                    for d in range(days):
                        start = dt.datetime.combine(day0 + dt.timedelta(days=d), dt.time(), dt.UTC) - dt.timedelta(hours=8)
                        await copy.write_row((f"gv{a}", d + 1, f"gv{a}:{d + 1}", TENANT, "c-bench", f"a{a}", f"h{d}", None, start, True))
            await cur.executemany("INSERT INTO gateway_chain (gateway_id, contiguous_through, highest_seq) VALUES (%s, %s, %s)", [(f"gv{a}", days, days) for a in range(anchors)])
        await conn.commit()
        await conn.execute("ANALYZE")
        await conn.commit()

        sql_times = []
        for _ in range(20):
            started = time.perf_counter()
            await (await conn.execute(_VALUE_SQL, (TENANT, "c-bench"))).fetchall()
            sql_times.append(time.perf_counter() - started)

    settings = CloudSettings(dsn=dsn, port=0, pool_max=4)
    latencies = []
    async with ApiServer(settings) as server, httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        started = time.perf_counter()
        first = await client.get("/api/v1/contracts/c-bench/value")
        cold = time.perf_counter() - started
        first.raise_for_status()
        for _ in range(requests):
            started = time.perf_counter()
            response = await client.get("/api/v1/contracts/c-bench/value")
            latencies.append(time.perf_counter() - started)
            response.raise_for_status()
    latencies.sort()
    return {
        "vouchers": anchors * days,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "sql_only_p50_ms": statistics.median(sql_times) * 1000,
        "cold_ms": cold * 1000,
        "total": first.json()["total"],
    }


async def main(args: argparse.Namespace) -> None:
    print(machine_line())
    # The broker lets 1,000 messages per client be in flight, so a worker can take whole batches before it acknowledges.
    with PostgresServer() as pg, MosquittoServer(extra_config=["max_inflight_messages 1000"]) as broker:
        dsn, version = fresh_database(pg)
        print(f"database: PostgreSQL {version}, TimescaleDB {'yes' if pg.timescaledb else 'no (plain tables)'}")
        async with Admin(dsn) as admin:
            await admin.create_tenant(TENANT, "Bench")
            await admin.create_site(TENANT, SITE, "Bench plant", "Asia/Shanghai")

        parts = set(args.parts.split(","))
        if "ingest" in parts:
            ingest = await bench_ingest(dsn, args.vouchers, pg.pid)
            print(f"ingest, one worker, no broker, machines per voucher {args.machines_per_voucher}: verify {ingest['verify_per_s']:,.0f}/s, verify + store {ingest['verify_and_store_per_s']:,.0f}/s"
              f" (target >= 5,000/s); reference verifier {ingest['reference_verify_per_s']:,.0f}/s,"
                  f" ratio {ingest['verify_and_store_per_s'] / ingest['reference_verify_per_s']:.2f}x;"
                  f" CPU per voucher stored: worker {ingest['worker_cpu_us']:.0f} us, PostgreSQL {ingest['server_cpu_us']:.0f} us, load {os.getloadavg()[0]:.2f}")  # fmt: skip
        if "mqtt" in parts:
            mqtt = await bench_ingest_mqtt(dsn, broker.port, args.mqtt_vouchers)
            print(f"ingest, one worker, through Mosquitto (publish to final ack): {mqtt['worker_per_s']:,.0f} vouchers/s;"
                  f" broker alone with a bare subscriber {mqtt['broker_alone_per_s']:,.0f} messages/s,"
                  f" ratio {mqtt['worker_per_s'] / mqtt['broker_alone_per_s']:.2f}x; worker CPU per voucher {mqtt['worker_cpu_us']:.0f} us, load {os.getloadavg()[0]:.2f}")  # fmt: skip
        if "telemetry" in parts:
            tel = await bench_telemetry(dsn, args.telemetry_rows)
            print(f"telemetry: {tel['rows']:,} rows at {tel['rows_per_s']:,.0f} rows/s (target >= 100,000/s); bare COPY {tel['reference_copy_rows_per_s']:,.0f} rows/s,"
                  f" ratio {tel['rows_per_s'] / tel['reference_copy_rows_per_s']:.2f}x")  # fmt: skip
        if "value" in parts:
            value = await bench_value(dsn, args.anchors, args.days, args.requests)
            print(f"value endpoint: {value['vouchers']:,} vouchers ({args.anchors} anchors x 10 machines x {args.days} days):"
                  f" first request {value['cold_ms']:.0f} ms, then p50 {value['p50_ms']:.1f} ms, p99 {value['p99_ms']:.1f} ms (target p99 < 200 ms);"
                  f" SQL alone p50 {value['sql_only_p50_ms']:.1f} ms; total {value['total']}")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vouchers", type=int, default=6000, help="Signed vouchers for the ingest figure.")
    parser.add_argument("--mqtt-vouchers", type=int, default=6000, help="Signed vouchers sent through the broker.")
    parser.add_argument("--telemetry-rows", type=int, default=288_000, help="Per-minute rows (rounded down to whole machine-days).")
    parser.add_argument("--anchors", type=int, default=100, help="Anchors of 10 machines each (100 anchors = 1,000 machines).")
    parser.add_argument("--days", type=int, default=365, help="Days of vouchers per anchor.")
    parser.add_argument("--requests", type=int, default=200, help="Timed requests to the value endpoint.")
    parser.add_argument("--machines-per-voucher", type=int, default=1, help="Machines in each ingested voucher's scope: 1 gives about 2 KB, 10 about 3.4 KB.")
    parser.add_argument("--parts", default="ingest,mqtt,telemetry,value", help="Comma-separated parts to run.")
    arguments = parser.parse_args()
    MACHINES_PER_VOUCHER = arguments.machines_per_voucher
    asyncio.run(main(arguments))
