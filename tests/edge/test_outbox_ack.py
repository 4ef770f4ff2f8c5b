"""An ack marks exactly the minute records its vouchers commit to, with spans of one machine joined into one update."""

from __future__ import annotations

from pathlib import Path

from valuegate.edge import keys, outbox
from valuegate.edge.issuer import VoucherSigner
from valuegate.edge.outbox import PendingVoucher, _merged_spans
from valuegate.edge.spool import Spool

from .helpers import GATEWAY, SITE, TENANT, load, synthetic_body

MINUTE = 60_000
BASE = 1_770_000_000_000 // MINUTE * MINUTE


def test_merged_spans_per_machine() -> None:
    spans = [("m1", 0, 10), ("m2", 5, 6), ("m1", 30, 40), ("m1", 10, 20), ("m1", 15, 25), ("m2", 6, 6), ("m2", 7, 9)]
    assert _merged_spans(spans) == [("m1", 0, 25), ("m1", 30, 40), ("m2", 5, 6), ("m2", 7, 9)]
    assert _merged_spans([]) == []
    assert _merged_spans([("m1", 0, 50), ("m1", 10, 20)]) == [("m1", 0, 50)]


def test_ack_marks_the_minutes_of_acked_vouchers_only(tmp_path: Path) -> None:
    config = load(tmp_path, 1883)
    keys.create_key(config.state_path / "keys")
    spool = Spool(config.state_path / "spool.db")
    try:
        signer = VoucherSigner(config.state_path / "keys", tenant=TENANT, site=SITE, gateway=GATEWAY)
        # Spans in minutes from BASE: touching, overlapping, apart, and two machines in one voucher.
        layout = [(("m1",), 0, 10), (("m1",), 10, 20), (("m2",), 5, 15), (("m1", "m2"), 30, 40), (("m1",), 35, 45), (("m2",), 50, 60)]
        items = [
            PendingVoucher("c-1", "a", f"2026-02-{index + 1:02d}", machines, BASE + start * MINUTE, BASE + end * MINUTE, synthetic_body(f"2026-02-{index + 1:02d}"))
            for index, (machines, start, end) in enumerate(layout)
        ]
        signer.issue(spool, items, now_ms=BASE)
        with spool.transaction(sync="NORMAL") as db:
            db.executemany(
                "INSERT INTO minutes (machine, minute_ms, record) VALUES (?, ?, '{}')",
                [(machine, BASE + minute * MINUTE) for machine in ("m1", "m2") for minute in range(70)],
            )
        through, removed = outbox.ack(spool, 5)
        assert (through, removed) == (5, 5)
        # Reference: each acknowledged voucher's span, minute by minute.
        expected = {
            (machine, BASE + minute * MINUTE) for machines, start, end in layout[:5] for machine in machines for minute in range(start, end)
        }
        marked = set(spool.db.execute("SELECT machine, minute_ms FROM minutes WHERE covered = 1").fetchall())
        assert marked == expected
        assert ("m2", BASE + 50 * MINUTE) not in marked  # the sixth voucher is not acknowledged
        assert ("m1", BASE + 25 * MINUTE) not in marked  # between spans
    finally:
        spool.close()
