"""Reading the rejection notice of a cloud ack, and how long the health report shows it."""

from __future__ import annotations

from typing import Any

import pytest

from valuegate.edge.rejection_notice import RecentRejection, RejectionNotice, parse_notice

NOTICE = {"kind": "telemetry", "code": "signature_missing", "voucher_id": None, "reason": "no valuegate-signature property"}


def test_notice_read_from_ack() -> None:
    ack = {"schema": "valuegate/ack/v1", "stored_through": 4, "rejected": NOTICE}
    assert parse_notice(ack) == RejectionNotice("telemetry", "signature_missing", None, "no valuegate-signature property")
    long_reason = parse_notice({"rejected": {**NOTICE, "kind": "voucher", "voucher_id": "gw:3", "reason": "x" * 900}})
    assert long_reason is not None
    assert (long_reason.voucher_id, len(long_reason.reason)) == ("gw:3", 500)


@pytest.mark.parametrize(
    "ack",
    [
        {"schema": "valuegate/ack/v1", "stored_through": 4},
        {"rejected": "key_unknown"},
        {"rejected": {**NOTICE, "kind": "status"}},
        {"rejected": {**NOTICE, "code": "Key Unknown"}},
        {"rejected": {**NOTICE, "code": "k" * 41}},
        {"rejected": {**NOTICE, "code": 7}},
        [NOTICE],
    ],
)
def test_malformed_notice_ignored(ack: Any) -> None:
    assert parse_notice(ack) is None


def test_recent_rejection_window() -> None:
    now = [1_764_900_000.0]
    recent = RecentRejection(window_s=600.0, clock=lambda: now[0])
    assert recent.current() is None
    recent.note(RejectionNotice("voucher", "key_unknown", "gw:1", "not registered"))
    now[0] += 600.0
    assert recent.current() == {"kind": "voucher", "code": "key_unknown", "voucher_id": "gw:1", "reason": "not registered", "received_at": "2025-12-05T02:00:00+00:00"}
    now[0] += 0.5
    assert recent.current() is None
