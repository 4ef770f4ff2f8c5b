"""Edge agent benchmarks: signing rate, outbox delivery rate against the bare broker, and memory of a month's replay.

Run: .venv/bin/python bench/edge.py [--machines 50] [--days 30] [--vouchers 2000]

1. Signing: full vouchers (claims, RFC 8785, eddsa-jcs-2022) per second on
   one core, printed as a ratio to bare Ed25519 signatures of 64 bytes
   measured in the same run.
2. Delivery: vouchers issued into the spool's outbox, published over a real
   Mosquitto broker, checked and stored by the product's ingest worker in a
   real PostgreSQL, and acknowledged back, per second end to end.
3. Broker: the same publisher drains an outbox of vouchers to Mosquitto at
   QoS 1 while a bare client with no database acks each voucher on arrival
   (then, in a second pass, one ack per window). The reference in the same
   run is the broker alone: a bare paho client publishing the same payload
   bytes with the same in-flight window to a bare counting subscriber.
4. Replay: a month of 50 machines through the spool and the pipeline
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


def _bare_client(port: int, client_id: str, window: int = 20):  # noqa: ANN202
    import paho.mqtt.client as mqtt

    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(window)
    client.max_queued_messages_set(0)
    subscribed = threading.Event()
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    return client, subscribed


class _Acknowledger:
    """Stand-in for the cloud without a database, which acks each ``every``-th voucher and the last one when it arrives.

    It also records when the first voucher arrived.
    """

    def __init__(self, port: int, prefix: str, *, every: int, last: int) -> None:
        from valuegate.edge.publish import ACK_SCHEMA

        self.every = every
        self.last = last
        self.ack_topic = f"{prefix}/ack"
        self.schema = ACK_SCHEMA
        self.stored = 0
        self.first: float | None = None
        self.client, subscribed = _bare_client(port, "bench-acknowledger")
        self.client.on_message = self._on_message
        self.client.subscribe(f"{prefix}/vouchers", qos=1)
        subscribed.wait(10)

    def _on_message(self, client, _userdata, message) -> None:  # noqa: ANN001
        import json

        if self.first is None:
            self.first = time.perf_counter()
        seq = json.loads(message.payload)["credentialSubject"]["seq"]
        if seq == self.stored + 1:
            self.stored = seq
            if seq % self.every and seq != self.last:
                return
            client.publish(self.ack_topic, json.dumps({"schema": self.schema, "stored_through": seq}), qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def broker_alone(port: int, topic: str, payloads: list[bytes], window: int) -> float:
    """Publish ``payloads`` at QoS 1 with ``window`` in flight from a bare paho client.

    Returns the seconds from the first to the last arrival at a bare subscriber.
    """
    count = len(payloads)
    done = threading.Event()
    arrivals: list[float] = []

    def on_message(*_: object) -> None:
        arrivals.append(time.perf_counter())
        if len(arrivals) == count:
            done.set()

    counter, subscribed = _bare_client(port, "bench-counter")
    counter.on_message = on_message
    counter.subscribe(topic, qos=1)
    subscribed.wait(10)
    sender, _ = _bare_client(port, "bench-sender", window)
    while not sender.is_connected():
        time.sleep(0.01)
    for payload in payloads:
        sender.publish(topic, payload, qos=1)
    if not done.wait(120):
        msg = f"the counter received {len(arrivals)} of {count} messages in 120 s; check the broker log"
        raise RuntimeError(msg)
    for client in (sender, counter):
        client.disconnect()
        client.loop_stop()
    return arrivals[-1] - arrivals[0]


async def agent_through(port: int, folder: Path, count: int, every: int) -> tuple[float, list[bytes], int, str]:
    """Issue ``count`` vouchers into a fresh outbox, then time the agent's publisher until the acknowledger's acks cover them all.

    Returns the seconds from the first voucher's arrival, the payloads, the window and the vouchers topic.
    """
    from edge.helpers import issue_synthetic, load

    from valuegate.edge import keys, outbox
    from valuegate.edge.issuer import VoucherSigner
    from valuegate.edge.metrics import AgentMetrics
    from valuegate.edge.publish import Publisher
    from valuegate.edge.spool import SpoolThread

    config = load(folder, port, publish={"window": 100, "ack_timeout_s": 30})
    keys.create_key(config.state_path / "keys")
    async with SpoolThread(config.state_path / "spool.db") as spool:
        signer = VoucherSigner(config.state_path / "keys", tenant="acme", site="suzhou", gateway="gw-1")
        await spool.call(lambda s: issue_synthetic(s, signer, count, first_date="2020-01-01", now_ms=int(time.time() * 1000)))
        payloads = [entry.payload for entry in await spool.call(outbox.pending, 1, count)]
        acknowledger = _Acknowledger(port, config.topic("vouchers").rpartition("/")[0], every=every, last=count)
        publisher = Publisher(config, spool, AgentMetrics(), instance=f"bench-{every}")
        task = asyncio.create_task(publisher.run())
        while publisher.acked_through < count:
            await asyncio.sleep(0.002)
        elapsed = time.perf_counter() - acknowledger.first
        publisher.stop()
        await task
        acknowledger.close()
    return elapsed, payloads, config.publish.window, config.topic("vouchers")


async def bench_broker(count: int) -> None:
    from valuegate.services import MosquittoServer

    with tempfile.TemporaryDirectory() as folder, MosquittoServer() as broker:
        per_voucher_s, payloads, window, topic = await agent_through(broker.port, Path(folder) / "each", count, every=1)
        batched_s, *_ = await agent_through(broker.port, Path(folder) / "batched", count, every=window)
        alone_s = await asyncio.to_thread(broker_alone, broker.port, topic + "-bare", payloads, window)
    per_voucher, batched, alone = ((count - 1) / seconds for seconds in (per_voucher_s, batched_s, alone_s))
    size = sum(map(len, payloads)) / count
    print(
        f"broker: {count} vouchers of {size:,.0f} bytes at QoS 1, {window} in flight, to Mosquitto. "
        f"The agent's publisher from its outbox, acked by a bare client without a database: {per_voucher:,.0f} vouchers/s "
        f"({per_voucher_s:.2f} s) with one ack per voucher, {batched:,.0f}/s ({batched_s:.2f} s) with one ack per {window}; "
        f"a bare paho client publishing the same bytes to a bare counter: {alone:,.0f}/s ({alone_s:.2f} s). "
        f"agent / broker alone = {per_voucher / alone:.2f} (one ack per voucher), {batched / alone:.2f} (one ack per {window})"
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
    parser.add_argument("--skip", action="append", default=[], choices=["signing", "delivery", "broker", "replay"], help="skip a part")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.platform()}")
    if "signing" not in args.skip:
        bench_signing(args.vouchers)
    if "delivery" not in args.skip:
        asyncio.run(bench_delivery(args.vouchers))
    if "broker" not in args.skip:
        asyncio.run(bench_broker(args.vouchers))
    if "replay" not in args.skip:
        bench_replay(args.machines, args.days)


if __name__ == "__main__":
    main()
