"""Requests from the ingest to gateways for records the cloud lacks: a voucher's evidence, or a baseline period's records."""

from __future__ import annotations

import datetime as dt
import time

import msgspec
import paho.mqtt.client as mqtt
import structlog

from . import metrics
from .reproduce import BaselineSpan
from .verify import Topic

__all__ = ("RecordRequests",)

log = structlog.get_logger("valuegate.cloud.ingest")
# The parts a baseline-period records request is split into.
_REQUEST_SPAN = dt.timedelta(days=31)
_REQUEST_MACHINES = 64


class RecordRequests:
    """Records requests to gateways on their ``resend`` topics; the same request goes out at most once per ``wait_s``."""

    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s
        # The last time each (gateway, sequence or period start) was asked for.
        self._last: dict[tuple[str, int | str], float] = {}

    def vouchers(self, client: mqtt.Client, missing: list[tuple[str, str, str, int]]) -> None:
        """Ask each gateway to resend from its oldest voucher whose records have not arrived; the edge resends the records with it."""
        oldest: dict[tuple[str, str, str], int] = {}
        for tenant, site, gateway, seq in missing:
            key = (tenant, site, gateway)
            oldest[key] = min(seq, oldest.get(key, seq))
        now = time.monotonic()
        for (tenant, site, gateway), seq in oldest.items():
            if now - self._last.get((gateway, seq), -1e9) < self.wait_s:
                continue
            self._last[(gateway, seq)] = now
            topic = Topic(tenant, site, gateway, "resend")
            client.publish(topic.reply("resend"), msgspec.json.encode({"schema": "valuegate/resend/v1", "from_seq": seq, "missing": "records"}), qos=1)
            metrics.RESEND_REQUESTS.inc()
            log.info("records_requested", gateway=gateway, from_seq=seq)

    def baselines(self, client: mqtt.Client, missing: list[tuple[str, BaselineSpan]]) -> None:
        """Ask each gateway for the records of a baseline period that a voucher's rebuilt baseline lacks."""
        now = time.monotonic()
        for site, span in missing:
            key = (span.gateway, span.start.isoformat())
            if now - self._last.get(key, -1e9) < self.wait_s:
                continue
            self._last[key] = now
            topic = Topic(span.tenant, site, span.gateway, "resend").reply("resend")
            # The edge accepts requests of at most 62 days and 64 machines, so a longer baseline goes in parts.
            for first in range(0, len(span.machines), _REQUEST_MACHINES):
                machines = list(span.machines[first : first + _REQUEST_MACHINES])
                start = span.start
                while start < span.end:
                    end = min(start + _REQUEST_SPAN, span.end)
                    request = {"schema": "valuegate/records-request/v1", "machines": machines, "start": _utc(start), "end": _utc(end)}
                    client.publish(topic, msgspec.json.encode(request), qos=1)
                    metrics.RESEND_REQUESTS.inc()
                    start = end
            log.info("baseline_records_requested", gateway=span.gateway, machines=list(span.machines), start=_utc(span.start), end=_utc(span.end))


def _utc(stamp: dt.datetime) -> str:
    return stamp.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
