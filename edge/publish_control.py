"""The cloud's control messages on one publisher connection: acks, resend requests and records requests.

Acks are cumulative, so the session keeps the highest one received and
applies it to the outbox at once when it covers every voucher sent, and
otherwise :data:`ACK_SETTLE_S` later, so that acks arriving one per voucher
share one outbox commit. A resend request publishes again the records of
the first vouchers from its sequence, and moves the voucher cursor back to
that sequence or to the first unacknowledged voucher, whichever is later. A
request for vouchers below the ack point also republishes the copies of
acknowledged vouchers that the spool keeps. A records request publishes the
records of the machines and time span it names.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from . import outbox
from .publish_messages import ACK_SCHEMA, RESEND_SCHEMA, ClientEvent, int_field, now_ms, records_span
from .rejection_notice import parse_notice, save_notice

if TYPE_CHECKING:
    from .publish import Publisher

__all__ = ("ACK_SETTLE_S", "ControlMessages")

# Vouchers whose evidence records one resend request republishes, at most.
_RESEND_EVIDENCE_VOUCHERS = 8
# Acknowledged vouchers one resend request below the ack point publishes again, at most; the next request continues.
_RESEND_ACKED_MAX = 500
# How long an ack that leaves vouchers in flight waits for later acks, so that acks arriving one per voucher cost one outbox commit together.
ACK_SETTLE_S = 0.05


class ControlMessages:
    """The session's handling of the cloud's acks and requests, mixed into :class:`~.publish_session.SessionState`.

    It works on the session's cursors and publishes through the session's
    ``_publish``, ``_publish_records`` and ``_move_cursor``. Status messages
    go to the session's ``_check_status``.
    """

    p: Publisher
    topics: dict[str, str]
    voucher_cursor: int
    stored_through: int
    ack_due: float | None
    applying: asyncio.Task[None] | None
    published_records: list[tuple[int, str]]
    last_progress: float

    async def handle(self, event: ClientEvent) -> None:
        if event.kind == "message":
            await self._on_message(event.topic, event.payload)

    def wait_s(self, idle_s: float) -> float:
        """Return how long the session may wait for the next event: ``idle_s``, or less when an ack is due sooner.

        While an ack is being applied, the session waits for that to end (it wakes the session), not for ``ack_due``.
        """
        if self.ack_due is None or self.applying is not None:
            return idle_s
        return max(0.0, min(idle_s, self.ack_due - time.monotonic()))

    async def settle(self, *, final: bool = False) -> None:
        """Apply the highest cloud ack received, and mark the telemetry the broker acknowledged as published.

        An ack that covers every voucher sent is applied at once. One that
        leaves vouchers in flight waits until ``ack_due``, so that the acks
        arriving meanwhile share one outbox commit. ``final`` applies it now.
        A rejection notice that arrived since the last call is stored in the spool first.
        """
        if (notice := self.p.cloud_rejection.take_unsaved()) is not None:
            await self.p.spool.call(save_notice, notice)
        applying = self.applying
        if applying is not None and (final or applying.done()):
            self.applying = None
            await applying  # raises what the spool raised
        if self.stored_through > self.p.acked_through:
            if self.applying is None and (final or self.stored_through >= self.voucher_cursor - 1 or time.monotonic() >= (self.ack_due or 0.0)):
                through, self.stored_through, self.ack_due = self.stored_through, 0, None
                if final:
                    await self._apply_ack(through)
                else:
                    # The commit runs while the session goes on publishing; the next settle after it picks up later acks.
                    self.applying = asyncio.create_task(self._apply_ack(through), name="valuegate-apply-ack")
                    self.applying.add_done_callback(lambda _task: self.p._wake.set())
        else:
            self.ack_due = None
        if not self.published_records:
            return
        keys, self.published_records = self.published_records, []
        await self.p.spool.call(outbox.mark_published, keys, now_ms())
        self.p.metrics.telemetry_records.inc(len(keys))

    async def _on_message(self, topic: str, payload: bytes) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            self.p.metrics.bad_control_messages.inc()
            if (held := self.p.limit("control_message_invalid")) is not None:
                self.p._log.warning("control_message_invalid", topic=topic, reason="not JSON", repeats_not_logged=held)
            return
        if topic == self.topics["status"]:
            await self._check_status(message)
        elif topic == self.topics["ack"] and (through := int_field(message, ACK_SCHEMA, "stored_through")) is not None:
            self._take_notice(message)
            self._note_ack(through)
        elif topic == self.topics["resend"] and int_field(message, RESEND_SCHEMA, "from_seq") is not None:
            missing = message.get("missing")
            await self._on_resend(int(message["from_seq"]), missing=missing if missing in ("vouchers", "records") else None)
        elif topic == self.topics["resend"] and (span := records_span(message)) is not None:
            await self._on_records_request(*span)
        else:
            self.p.metrics.bad_control_messages.inc()
            schema = message.get("schema") if isinstance(message, dict) else None
            if (held := self.p.limit("control_message_invalid")) is not None:
                self.p._log.warning("control_message_invalid", topic=topic, schema=schema, reason="unknown schema or missing field", repeats_not_logged=held)

    def take_ack(self, payload: bytes) -> bool | None:
        """Note a well-formed ack message from paho's callback, without a queued event; return whether the session should wake.

        Returns None for anything else, which the caller queues for :meth:`handle` to report.
        """
        try:
            message = json.loads(payload)
        except ValueError:
            return None
        through = int_field(message, ACK_SCHEMA, "stored_through")
        if through is None:
            return None
        noticed = self._take_notice(message)
        waiting = self.ack_due is not None
        self._note_ack(through)
        # A rejection notice wakes the session, whose next settle stores it in the spool.
        return noticed or not waiting or self.stored_through >= self.voucher_cursor - 1

    def _take_notice(self, message: dict[str, Any]) -> bool:
        """Log, count and keep for the health endpoint the rejection an ack may report; return whether it had one."""
        notice = parse_notice(message)
        if notice is None:
            return False
        self.p.metrics.cloud_rejections.labels(notice.kind, notice.code).inc()
        self.p.cloud_rejection.note(notice)
        if (held := self.p.limit(("cloud_rejected", notice.kind, notice.code))) is not None:
            self.p._log.warning("cloud_rejected", kind=notice.kind, code=notice.code, voucher_id=notice.voucher_id, reason=notice.reason, repeats_not_logged=held)
        return True

    def _note_ack(self, through: int) -> None:
        # Acks are cumulative: only the highest one received before the next settle is applied.
        self.stored_through = max(self.stored_through, through)
        if self.ack_due is None:
            self.ack_due = time.monotonic() + ACK_SETTLE_S

    async def _apply_ack(self, stored_through: int) -> None:
        through, removed = await self.p.spool.call(outbox.ack, stored_through)
        if through > self.p.acked_through:
            self.p.acked_through = through
            self.last_progress = time.monotonic()
            self.p.metrics.acked_through.set(through)
            self.p._log.info("vouchers_acknowledged", stored_through=through, removed=removed)
            self.p.resend_watch.acked(through)
            self._show_repeated()
        self._move_cursor(max(self.voucher_cursor, through + 1))

    async def _on_resend(self, from_seq: int, *, missing: str | None = None) -> None:
        """Handle a resend request. ``missing`` names what the cloud lacks: ``vouchers``, ``records`` or None (an older cloud).

        A request for records names a stored voucher, so one below the ack
        point is normal. A request for vouchers below the ack point means the
        cloud lost vouchers it acknowledged.
        """
        start = max(from_seq, self.p.acked_through + 1)
        if missing != "records":
            self.p.metrics.publish_retries.inc()
        self.p._log.info("resend_requested", from_seq=from_seq, resending_from=start, missing=missing or "unknown")
        if missing == "vouchers" and from_seq <= self.p.acked_through:
            await self._resend_acknowledged(from_seq)
            repeated = None  # not a rejection, so no resend_repeated warning that points at keys
        else:
            repeated = self.p.resend_watch.note(from_seq)
        self._show_repeated()
        if repeated is not None and (held := self.p.limit(("resend_repeated", repeated.from_seq))) is not None:
            notice = self.p.cloud_rejection.current()
            self.p._log.warning(
                "resend_repeated",
                from_seq=repeated.from_seq,
                requests=repeated.requests,
                window_s=repeated.window_s,
                reason=_repeated_reason(notice),
                repeats_not_logged=held,
            )
        # The cloud requests a resend when it lacks a voucher or the records it commits to, so send both.
        # A request below the ack point requests records only, because those of acknowledged vouchers stay
        # for the telemetry retention. Records go for the first few vouchers only: a later gap brings a later request.
        seq = from_seq
        while seq < min(self.voucher_cursor, from_seq + _RESEND_EVIDENCE_VOUCHERS):
            span = await self.p.spool.call(outbox.voucher_span, seq)
            rows = await self.p.spool.call(outbox.records_for, *span) if span is not None else []
            if rows:
                self._publish_records(rows)
            elif span is None and seq <= self.p.acked_through and (held := self.p.limit("evidence_unavailable")) is not None:
                # A scope still known with no rows is a day without records (the line stood still), not a loss.
                self.p._log.warning(
                    "evidence_unavailable", seq=seq, reason="the voucher's scope and records were pruned after the telemetry retention", repeats_not_logged=held
                )
            seq += 1
        self._move_cursor(min(self.voucher_cursor, start))

    async def _resend_acknowledged(self, from_seq: int) -> None:
        """Publish again the acknowledged vouchers the cloud requests, from the copies kept for the telemetry retention.

        The cloud acknowledged them before, so it has lost them: its database
        was most likely restored from a backup taken before that ack.
        """
        through = self.p.acked_through
        copies, pruned = await self.p.spool.call(outbox.acked_payloads, from_seq, through, _RESEND_ACKED_MAX)
        for seq, payload in copies:
            self._publish("voucher", seq, self.topics["vouchers"], payload)
        self.p.metrics.acked_vouchers_resent.inc(len(copies))
        if (held := self.p.limit("resend_below_ack")) is not None:
            self.p._log.warning(
                "resend_below_ack", from_seq=from_seq, acked_through=through, republished=len(copies), no_longer_kept=pruned,
                reason="the cloud asks for vouchers it acknowledged before, so it lost them (was its database restored from an older backup?); "
                "the agent sends them again from the copies it keeps for the telemetry retention" + ("" if not pruned else "; the vouchers no longer kept cannot be sent again"),
                repeats_not_logged=held,
            )  # fmt: skip

    def _show_repeated(self) -> None:
        repeated = self.p.resend_watch.repeated()
        self.p.metrics.resend_repeated_seq.set(repeated.from_seq if repeated else 0)

    async def _on_records_request(self, machines: list[str], start_ms: int, end_ms: int) -> None:
        rows = await self.p.spool.call(outbox.records_for, machines, start_ms, end_ms)
        self.p._log.info("records_request_answered", machines=machines, start_ms=start_ms, end_ms=end_ms, records=len(rows))
        if rows:
            self._publish_records(rows)


def _repeated_reason(notice: dict[str, Any] | None) -> str:
    """Return the likely cause of a repeated resend request: the cloud's latest rejection notice, or else an outage on the way."""
    if notice is not None:
        return (
            f"the cloud keeps requesting this voucher and reported a rejection ({notice['code']}), so later vouchers wait; "
            "look up the gateway's rejections in the cloud (a key_not_valid or key_unknown reason names the fix)"
        )
    return (
        "the cloud keeps requesting this voucher but reported no rejection; check that the broker and every cloud ingest worker run "
        "(a stopped worker's share of the messages waits in the broker), then look up the gateway's rejections in the cloud"
    )
