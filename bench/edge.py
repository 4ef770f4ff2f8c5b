"""Edge agent benchmarks: signing rate, outbox delivery rate against the bare broker, and memory of a month's replay.

Run: .venv/bin/python bench/edge.py [--machines 50] [--days 30] [--vouchers 2000] [--broker-vouchers 10000] [--rounds 3]

1. Signing: full vouchers (claims, RFC 8785, eddsa-jcs-2022) per second on
   one core, printed as a ratio to bare Ed25519 signatures of 64 bytes
   measured in the same run.
2. Delivery: vouchers issued into the spool's outbox, published over a real
   Mosquitto broker, checked and stored by the product's ingest worker (in
   a process of its own, as the cloud runs apart from the gateway) in a
   real PostgreSQL, and acknowledged back, per second end to end.
3. Broker: the same publisher drains an outbox of vouchers to Mosquitto at
   QoS 1 while a bare client with no database, in another process, acks
   each voucher on arrival (then, in a second pass, one ack per window).
   The reference in the same run is the broker alone: a bare paho client
   publishing the same payload bytes with the same in-flight window to a
   bare counting subscriber in another process. A second reference,
   broker alone with one reply per message, gives the bare publisher the
   agent's message count with one ack per voucher. The stand-in cloud
   replies to each message with the product's ack message, and the bare
   publisher receives those acks.
4. Replay: a month of 50 machines through the spool and the pipeline
   (minute records, plant days, one voucher per machine and reporting day)
   without a broker. It prints machine-days per second and the peak
   resident memory against the resident memory right after start-up.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import multiprocessing
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def cpu_seconds(pid: int) -> float:
    """Return the user and system CPU seconds that process ``pid`` has used, from /proc (clock-tick resolution, 10 ms on most kernels)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rpartition(")")[2].split()
    # After the command name: field 14 (utime) and 15 (stime) of proc(5) are the 12th and 13th here.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def _ingest(dsn: str, port: int, ready, stop) -> None:  # noqa: ANN001
    """Child process running the product's ingest worker until ``stop`` is set."""
    from valuegate.cloud.ingest import IngestWorker
    from valuegate.cloud.settings import CloudSettings

    async def serve() -> None:
        async with IngestWorker(CloudSettings(dsn=dsn, mqtt_port=port, share_group="bench")):
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)

    asyncio.run(serve())


async def bench_delivery(count: int) -> None:
    import psycopg
    from edge.helpers import issue_synthetic, load

    from valuegate.cloud import db, store
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

        ready, stop = _SPAWN.Event(), _SPAWN.Event()
        worker = _SPAWN.Process(target=_ingest, args=(postgres.dsn, broker.port, ready, stop))
        worker.start()
        try:
            if not await asyncio.to_thread(ready.wait, 60):
                msg = "the ingest worker did not start within 60 s"
                raise RuntimeError(msg)
            async with SpoolThread(config.state_path / "spool.db") as spool:
                signer = VoucherSigner(config.state_path / "keys", tenant="acme", site="suzhou", gateway="gw-1")
                now_ms = int(time.time() * 1000)
                started = time.perf_counter()
                await spool.call(lambda s: issue_synthetic(s, signer, count, first_date=_first_date(count), now_ms=now_ms))
                issued = time.perf_counter() - started
                publisher = Publisher(config, spool, AgentMetrics(), instance="bench", telemetry_key=lambda: signer.key.private_key)
                task = asyncio.create_task(publisher.run())
                # The clock starts when the publisher goes online, after its wait for the retained status.
                while not (publisher.connected and publisher._current is not None and publisher._current.online):
                    await asyncio.sleep(0.001)
                started, cpu = time.perf_counter(), time.process_time()
                while (await spool.call(outbox.outbox_stats))["depth"]:
                    await asyncio.sleep(0.01)
                elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
                publisher.stop()
                await task
        finally:
            stop.set()
            await asyncio.to_thread(worker.join, 30)
        print(
            f"delivery: {count} vouchers from the outbox, published, checked and stored by the ingest worker (another process) "
            f"in PostgreSQL and acknowledged back: {count / elapsed:,.0f} vouchers/s ({elapsed:.2f} s); the agent used "
            f"{cpu / elapsed:.2f} of a core meanwhile; the issuing before it, with one FULL-sync transaction per anchor day "
            f"as the test helper stores them, ran at {count / issued:,.0f}/s"
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


_SPAWN = multiprocessing.get_context("spawn")


def _first_date(count: int) -> str:
    """Return the first plant date of ``count`` daily vouchers ending yesterday, since the cloud rejects vouchers from the future."""
    return (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=count + 1)).isoformat()


def _acknowledge(port: int, prefix: str, every: int, last: int, ready, first, misordered, busy=None) -> None:  # noqa: ANN001
    """Child process standing in for the cloud without a database: ack each ``every``-th voucher and the last one on arrival.

    ``first`` receives the monotonic time at which the first voucher arrived,
    ``misordered`` the arrival number of a checked voucher that carried another sequence number,
    and ``busy``, if given, this process's CPU seconds from the first arrival to the last ack.
    """
    import json

    from valuegate.edge.publish import ACK_SCHEMA

    done = threading.Event()
    stored = 0
    last_ack = None
    cpu_start = 0.0

    def on_message(client, _userdata, message) -> None:  # noqa: ANN001
        nonlocal stored, last_ack, cpu_start
        if first.value == 0.0:
            first.value = time.monotonic()
            cpu_start = time.process_time()
        # One publisher on one topic at QoS 1: Mosquitto delivers in order, so the arrival count is the
        # sequence number. Every 100th voucher and the last are parsed to check that, and no others, to keep this client light.
        seq = stored + 1
        stored = seq
        if (seq % 100 == 0 or seq == last) and json.loads(message.payload)["credentialSubject"]["seq"] != seq:
            misordered.value = seq
        if seq % every == 0 or seq == last:
            last_ack = client.publish(f"{prefix}/ack", json.dumps({"schema": ACK_SCHEMA, "stored_through": seq}), qos=1)
        if seq == last:
            if busy is not None:
                busy.value = time.process_time() - cpu_start
            done.set()

    client, subscribed = _bare_client(port, "bench-acknowledger")
    client.on_message = on_message
    client.subscribe(f"{prefix}/vouchers", qos=1)
    subscribed.wait(10)
    ready.set()
    done.wait(600)
    if last_ack is not None:
        last_ack.wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def _count(port: int, topic: str, count: int, ready, first, last, busy) -> None:  # noqa: ANN001
    """Child process that counts ``count`` arrivals on ``topic``.

    Records the first and the last arrival time, and in ``busy`` this process's CPU seconds between them.
    """
    done = threading.Event()
    arrived = 0
    cpu_start = 0.0

    def on_message(*_: object) -> None:
        nonlocal arrived, cpu_start
        now = time.monotonic()
        if arrived == 0:
            first.value = now
            cpu_start = time.process_time()
        arrived += 1
        if arrived == count:
            last.value = now
            busy.value = time.process_time() - cpu_start
            done.set()

    counter, subscribed = _bare_client(port, "bench-counter")
    counter.on_message = on_message
    counter.subscribe(topic, qos=1)
    subscribed.wait(10)
    ready.set()
    done.wait(300)
    counter.disconnect()
    counter.loop_stop()


def broker_alone(port: int, topic: str, payloads: list[bytes], window: int) -> tuple[float, float, float]:
    """Publish ``payloads`` at QoS 1 with ``window`` in flight from a bare paho client.

    Returns the seconds from the first to the last arrival at a bare subscriber in another process,
    and the share of a core that the subscriber and this process (the bare publisher) used meanwhile.
    """
    count = len(payloads)
    ready, first, last, busy = _SPAWN.Event(), _SPAWN.Value("d", 0.0), _SPAWN.Value("d", 0.0), _SPAWN.Value("d", 0.0)
    counter = _SPAWN.Process(target=_count, args=(port, topic, count, ready, first, last, busy))
    counter.start()
    if not ready.wait(60):
        msg = "the counting subscriber did not subscribe within 60 s; check the broker log"
        raise RuntimeError(msg)
    sender, _ = _bare_client(port, "bench-sender", window)
    while not sender.is_connected():
        time.sleep(0.01)
    cpu = time.process_time()
    for payload in payloads:
        sender.publish(topic, payload, qos=1)
    counter.join(300)
    cpu = time.process_time() - cpu
    sender.disconnect()
    sender.loop_stop()
    if last.value == 0.0:
        msg = f"the counter did not receive all {count} messages; check the broker log"
        raise RuntimeError(msg)
    # The publisher's CPU time runs until the counter has exited, a little past the last arrival, so its share errs high.
    elapsed = last.value - first.value
    return elapsed, busy.value / elapsed, cpu / elapsed


def broker_replying(port: int, prefix: str, payloads: list[bytes], window: int) -> tuple[float, float, float]:
    """Publish ``payloads`` at QoS 1 with ``window`` in flight from a bare paho client that receives one ack message per payload.

    The replier is :func:`_acknowledge` with one ack per message, the same client and ack payload
    (topic ``{prefix}/ack``, QoS 1) that the agent's one-ack-per-voucher pass receives.
    Returns the seconds from the first arrival at the replier to the last ack received by the publisher,
    and the share of a core that the replier and this process (the bare publisher) used meanwhile.
    """
    count = len(payloads)
    ready, first, misordered = _SPAWN.Event(), _SPAWN.Value("d", 0.0), _SPAWN.Value("i", 0)
    busy = _SPAWN.Value("d", 0.0)
    replier = _SPAWN.Process(target=_acknowledge, args=(port, prefix, 1, count, ready, first, misordered, busy))
    replier.start()
    if not ready.wait(60):
        msg = "the replying client did not subscribe within 60 s; check the broker log"
        raise RuntimeError(msg)
    done = threading.Event()
    replies = 0
    last = 0.0

    def on_message(*_: object) -> None:
        nonlocal replies, last
        replies += 1
        if replies == count:
            last = time.monotonic()
            done.set()

    sender, subscribed = _bare_client(port, "bench-replied-sender", window)
    sender.on_message = on_message
    sender.subscribe(f"{prefix}/ack", qos=1)
    if not subscribed.wait(10):
        msg = "the replied sender did not subscribe within 10 s; check the broker log"
        raise RuntimeError(msg)
    cpu = time.process_time()
    for payload in payloads:
        sender.publish(f"{prefix}/vouchers", payload, qos=1)
    done.wait(300)
    cpu = time.process_time() - cpu
    sender.disconnect()
    sender.loop_stop()
    replier.join(30)
    if replier.is_alive():
        replier.terminate()
        replier.join(10)
    if not done.is_set():
        msg = f"the sender received {replies} of {count} replies; check the broker log"
        raise RuntimeError(msg)
    if misordered.value:
        msg = f"arrival number {misordered.value} at the replier carried another voucher; the broker reordered or duplicated a message"
        raise RuntimeError(msg)
    # The publisher's CPU time starts before the first arrival, so its share errs high by a few milliseconds of CPU.
    elapsed = last - first.value
    return elapsed, busy.value / elapsed, cpu / elapsed


async def agent_through(port: int, folder: Path, count: int, every: int) -> tuple[float, list[bytes], int, str, float, float]:
    """Issue ``count`` vouchers into a fresh outbox, then time the agent's publisher until the acknowledger's acks cover them all.

    Returns the seconds from the first voucher's arrival, the payloads, the window, the vouchers topic,
    the share of a core the agent's process used meanwhile, and the acknowledger's share of a core.
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
        await spool.call(lambda s: issue_synthetic(s, signer, count, first_date=_first_date(count), now_ms=int(time.time() * 1000)))
        payloads = [entry.payload for entry in await spool.call(outbox.pending, 1, count)]
        ready, first, misordered, busy = _SPAWN.Event(), _SPAWN.Value("d", 0.0), _SPAWN.Value("i", 0), _SPAWN.Value("d", 0.0)
        prefix = config.topic("vouchers").rpartition("/")[0]
        acknowledger = _SPAWN.Process(target=_acknowledge, args=(port, prefix, every, count, ready, first, misordered, busy))
        acknowledger.start()
        await asyncio.to_thread(ready.wait, 60)
        publisher = Publisher(config, spool, AgentMetrics(), instance=f"bench-{every}", telemetry_key=lambda: signer.key.private_key)
        cpu = time.process_time()
        task = asyncio.create_task(publisher.run())
        while publisher.acked_through < count:
            await asyncio.sleep(0.002)
        elapsed = time.monotonic() - first.value
        cpu = time.process_time() - cpu
        publisher.stop()
        await task
        await asyncio.to_thread(acknowledger.join, 30)
    if misordered.value:
        msg = f"arrival number {misordered.value} carried another voucher; the broker reordered or duplicated a message"
        raise RuntimeError(msg)
    return elapsed, payloads, config.publish.window, config.topic("vouchers"), cpu / elapsed, busy.value / elapsed


async def bench_broker(count: int, rounds: int) -> None:
    """Run the four passes ``rounds`` times, interleaved so that a change in machine load touches each alike, then print each round and the medians."""
    from valuegate.services import MosquittoServer

    rows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as folder, MosquittoServer() as broker:
        for round_no in range(rounds):
            row: dict[str, float] = {}
            # Mosquitto's CPU time includes connecting and subscribing, outside the timed span, so its share errs high a little.
            broker_cpu = cpu_seconds(broker.pid)
            per_voucher_s, payloads, window, topic, row["per_voucher_cpu"], row["cloud_cpu"] = await agent_through(
                broker.port, Path(folder) / f"each-{round_no}", count, every=1
            )
            row["per_voucher_broker_cpu"] = (cpu_seconds(broker.pid) - broker_cpu) / per_voucher_s

            # The replied pass runs next to the agent's one-ack-per-voucher pass, which it is compared with.
            broker_cpu = cpu_seconds(broker.pid)
            replied_s, row["replier_cpu"], row["sender_cpu"] = await asyncio.to_thread(broker_replying, broker.port, f"{topic}-replied-{round_no}", payloads, window)
            row["replied_broker_cpu"] = (cpu_seconds(broker.pid) - broker_cpu) / replied_s

            batched_s, _, _, _, row["batched_cpu"], row["batched_cloud_cpu"] = await agent_through(broker.port, Path(folder) / f"batched-{round_no}", count, every=window)

            broker_cpu = cpu_seconds(broker.pid)
            alone_s, row["counter_cpu"], row["alone_sender_cpu"] = await asyncio.to_thread(broker_alone, broker.port, f"{topic}-bare-{round_no}", payloads, window)
            row["alone_broker_cpu"] = (cpu_seconds(broker.pid) - broker_cpu) / alone_s

            for name, seconds in (("per_voucher", per_voucher_s), ("batched", batched_s), ("alone", alone_s), ("replied", replied_s)):
                row[name] = (count - 1) / seconds
            row["per_voucher_ratio"] = row["per_voucher"] / row["alone"]
            row["batched_ratio"] = row["batched"] / row["alone"]
            row["replied_ratio"] = row["per_voucher"] / row["replied"]
            rows.append(row)
            print(f"broker round {round_no + 1}: " + _broker_figures(row, window))
    median = {name: statistics.median(row[name] for row in rows) for name in rows[0]}
    size = sum(map(len, payloads)) / count
    print(
        f"broker: {count} vouchers of {size:,.0f} bytes at QoS 1, {window} in flight, to Mosquitto; medians of {rounds} rounds. "
        f"The agent's publisher drains its outbox and a bare client without a database in another process acks it: " + _broker_figures(median, window)
    )


def _broker_figures(row: dict[str, float], window: int) -> str:
    """Format the rates, ratios and shares of a core of one round of the broker part, or of their medians."""
    return (
        f"agent {row['per_voucher']:,.0f} vouchers/s with one ack per voucher ({row['per_voucher_cpu']:.2f} of a core, "
        f"stand-in cloud {row['cloud_cpu']:.2f}, Mosquitto {row['per_voucher_broker_cpu']:.2f}), "
        f"{row['batched']:,.0f}/s with one ack per {window} ({row['batched_cpu']:.2f} of a core, stand-in cloud {row['batched_cloud_cpu']:.2f}); "
        f"broker alone, a bare paho client publishing the same bytes to a bare counter in another process, {row['alone']:,.0f}/s "
        f"(bare publisher {row['alone_sender_cpu']:.2f} of a core, counter {row['counter_cpu']:.2f}, Mosquitto {row['alone_broker_cpu']:.2f}); "
        f"agent / broker alone = {row['per_voucher_ratio']:.2f} (one ack per voucher) and {row['batched_ratio']:.2f} (one ack per {window}); "
        f"broker alone with one reply per message, the bare client receiving one ack message per message from the same stand-in cloud, "
        f"{row['replied']:,.0f}/s (bare publisher {row['sender_cpu']:.2f} of a core, replier {row['replier_cpu']:.2f}, "
        f"Mosquitto {row['replied_broker_cpu']:.2f}); "
        f"agent with one ack per voucher / broker alone with one reply per message = {row['replied_ratio']:.2f}"
    )


def bench_replay(machines: int, days: int) -> None:
    from edge.test_pipeline import CONTRACT

    from valuegate.adapters.tagmap import load_tag_map, shipped_tag_map_dir
    from valuegate.edge import keys, kernels
    from valuegate.edge.issuer import VoucherSigner
    from valuegate.edge.minutes import MachineInfo
    from valuegate.edge.pipeline import Pipeline
    from valuegate.edge.protocol.contract import parse_contract
    from valuegate.edge.retention import prune
    from valuegate.edge.spool import Spool
    from valuegate.edge.spool_rows import CounterReading, MachineBatch, StateEvent

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
                    prune(spool, 10**12, now_ms=10**13, retention_ms=0)
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
    parser.add_argument("--broker-vouchers", type=int, default=10000, help="vouchers per pass of the broker part")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the broker part")
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
        asyncio.run(bench_broker(args.broker_vouchers, args.rounds))
    if "replay" not in args.skip:
        bench_replay(args.machines, args.days)


if __name__ == "__main__":
    main()
