"""TEST STAND-IN for the cloud's voucher ingest: verifies, stores idempotently and acks over a real broker.

This is not the product's ingest (``valuegate.cloud.ingest``). It exists so
that the edge tests can check the end-to-end delivery rules on their own:
it subscribes to a gateway's ``vouchers`` and ``telemetry`` topics with a
persistent session, checks each voucher with ``valuegate.edge.protocol``
(schema, proof, issuer key, chain link), stores it once per voucher id in
SQLite, and publishes ``ack`` with the highest contiguous stored sequence.
When a sequence is missing above that point it asks for a ``resend``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from valuegate.edge.protocol.keyrotation import key_for_seq
from valuegate.edge.protocol.telemetry_proof import signature_of, verify_telemetry
from valuegate.edge.protocol.voucher import VoucherError, parse_voucher, verify_voucher, voucher_hash


class AckResponder:
    """Test stand-in for the cloud ingest of one gateway (see the module docstring)."""

    def __init__(
        self,
        port: int,
        *,
        tenant: str,
        site: str,
        gateway: str,
        database: Path | None = None,
        client_id: str = "standin-ingest",
        first_key: str | None = None,
        rotations: list[dict[str, Any]] | None = None,
        ack_delay_s: float = 0.0,
    ) -> None:
        self.port = port
        self.prefix = f"valuegate/v1/{tenant}/{site}/{gateway}"
        self.client_id = client_id
        self.first_key = first_key
        self.rotations = rotations or []
        self.db = sqlite3.connect(database or ":memory:", check_same_thread=False, isolation_level=None)
        self.db.execute("CREATE TABLE IF NOT EXISTS vouchers (seq INTEGER PRIMARY KEY, voucher_id TEXT UNIQUE, hash TEXT, prev TEXT, body TEXT)")
        self.db.execute("CREATE TABLE IF NOT EXISTS records (machine TEXT, minute TEXT, body TEXT, PRIMARY KEY (machine, minute))")
        self.lock = threading.Lock()
        self.duplicates = 0
        self.rejected: list[str] = []
        self.telemetry_keys: set[str] = set()
        """Public keys (multibase) whose signatures on telemetry verified."""
        self.record_duplicates = 0
        self.deliveries = 0
        self.acks_sent: list[int] = []
        self.resends_sent: list[int] = []
        self.client: mqtt.Client | None = None
        self._last_resend = 0.0
        self.ack_delay_s = ack_delay_s
        self._ack_timer: threading.Timer | None = None

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> AckResponder:
        client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600
        client.reconnect_delay_set(0.1, 1.0)
        client.connect("127.0.0.1", self.port, keepalive=10, clean_start=False, properties=properties)
        client.loop_start()
        self.client = client
        return self

    def stop(self) -> None:
        """Disconnect; the broker keeps the session, so messages published meanwhile wait for :meth:`start`."""
        client, self.client = self.client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()

    def _on_connect(self, client: mqtt.Client, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        if reason.value == 0:
            client.subscribe([(f"{self.prefix}/vouchers", 1), (f"{self.prefix}/telemetry", 1)])
            with self.lock:
                stored = self._contiguous()
            if stored:
                self._publish_ack(client, stored)

    # -- ingest -------------------------------------------------------------

    def _on_message(self, client: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic.endswith("/telemetry"):
            signature = signature_of(getattr(message.properties, "UserProperty", None))
            if signature is None or not verify_telemetry(*signature, message.topic, message.payload):
                self.rejected.append(f"telemetry on {message.topic}: signature missing or invalid")
                return
            self.telemetry_keys.add(signature[0])
            self._store_records(message.payload)
            return
        self.deliveries += 1
        try:
            document, claims = parse_voucher(message.payload)
        except VoucherError as exc:
            self.rejected.append(f"{exc.code}: {exc}")
            return
        check = verify_voucher(document)
        if not check.ok:
            self.rejected.append(f"{claims.voucher_id}: {check.reason}")
            return
        if self.first_key is not None and check.verification_method != key_for_seq(self.first_key, self.rotations, claims.seq):
            self.rejected.append(f"{claims.voucher_id}: signed by {check.verification_method}, not the key in force")
            return
        with self.lock:
            inserted = self.db.execute(
                "INSERT OR IGNORE INTO vouchers (seq, voucher_id, hash, prev, body) VALUES (?, ?, ?, ?, ?)",
                (claims.seq, claims.voucher_id, voucher_hash(document), claims.prev, message.payload.decode()),
            ).rowcount
            if not inserted:
                self.duplicates += 1
            stored = self._contiguous()
            highest = self.db.execute("SELECT max(seq) FROM vouchers").fetchone()[0]
        if stored:
            self._schedule_ack(client)
        if highest is not None and highest > stored + 1 and time.monotonic() - self._last_resend > 0.5:
            self._last_resend = time.monotonic()
            self.resends_sent.append(stored + 1)
            client.publish(f"{self.prefix}/resend", json.dumps({"schema": "valuegate/resend/v1", "from_seq": stored + 1}), qos=1)

    def _store_records(self, payload: bytes) -> None:
        batch = json.loads(payload)
        with self.lock:
            for record in batch["records"]:
                inserted = self.db.execute(
                    "INSERT OR IGNORE INTO records (machine, minute, body) VALUES (?, ?, ?)", (record["machine"], record["minute"], json.dumps(record))
                ).rowcount
                self.record_duplicates += 1 - inserted

    def _contiguous(self) -> int:
        rows = self.db.execute("SELECT seq FROM vouchers ORDER BY seq").fetchall()
        stored = 0
        for (seq,) in rows:
            if seq != stored + 1:
                break
            stored = seq
        return stored

    def _schedule_ack(self, client: mqtt.Client) -> None:
        """Ack now, or once after ``ack_delay_s`` for everything stored meanwhile, as a batching ingest does."""
        if not self.ack_delay_s:
            with self.lock:
                stored = self._contiguous()
            self._publish_ack(client, stored)
            return
        with self.lock:
            if self._ack_timer is not None:
                return
            self._ack_timer = threading.Timer(self.ack_delay_s, self._delayed_ack, args=(client,))
            self._ack_timer.start()

    def _delayed_ack(self, client: mqtt.Client) -> None:
        with self.lock:
            self._ack_timer = None
            stored = self._contiguous()
        self._publish_ack(client, stored)

    def _publish_ack(self, client: mqtt.Client, stored: int) -> None:
        self.acks_sent.append(stored)
        client.publish(f"{self.prefix}/ack", json.dumps({"schema": "valuegate/ack/v1", "stored_through": stored}), qos=1)

    # -- checks -------------------------------------------------------------

    def stored(self) -> int:
        with self.lock:
            return self.db.execute("SELECT count(*) FROM vouchers").fetchone()[0]

    def chain_problems(self) -> list[str]:
        """Return every break in the stored chain: a missing sequence or a ``prev`` that is not the hash before it."""
        with self.lock:
            rows = self.db.execute("SELECT seq, hash, prev FROM vouchers ORDER BY seq").fetchall()
        problems = []
        previous_hash = None
        for expected, (seq, digest, prev) in enumerate(rows, start=1):
            if seq != expected:
                problems.append(f"seq {expected} missing (next stored is {seq})")
                break
            if prev != previous_hash:
                problems.append(f"seq {seq}: prev {prev} is not the hash of seq {seq - 1} ({previous_hash})")
            previous_hash = digest
        return problems

    def vouchers(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(body) for (body,) in self.db.execute("SELECT body FROM vouchers ORDER BY seq")]

    def records(self) -> int:
        with self.lock:
            return self.db.execute("SELECT count(*) FROM records").fetchone()[0]

    def wait_for(self, count: int, *, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            stored = self.stored()
            if stored >= count:
                return stored
            time.sleep(0.05)
        return self.stored()
