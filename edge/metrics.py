"""Prometheus metrics and the health endpoint of the edge agent, served on a loopback port."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, make_wsgi_app

# One limiter for adapter and agent warnings alike: once per key a minute, with the repeats held back.
from valuegate.adapters.backoff import RepeatLimiter as LogLimiter

__all__ = ("AgentMetrics", "MetricsServer", "LogLimiter")


class AgentMetrics:
    """The agent's metrics, in a registry of its own so that several agents can share one process in tests."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.device_connected = Gauge("valuegate_device_connected", "1 while the device's PLC connection is up", ["device"], registry=r)
        self.values_read = Counter("valuegate_values_read_total", "Tag values read from PLCs", ["device"], registry=r)
        self.decode_errors = Counter("valuegate_decode_errors_total", "Values with Bad status or that failed to decode", ["device"], registry=r)
        self.samples_spooled = Counter("valuegate_samples_spooled_total", "State events and counter readings committed to the spool", ["machine"], registry=r)
        self.missed_transitions = Counter(
            "valuegate_missed_transitions_total", "State changes the PLC counted but the agent never saw", ["machine"], registry=r
        )
        self.implausible_times = Counter(
            "valuegate_implausible_plc_times_total",
            "PLC times (clock, state_since, SourceTimestamp) outside 2000-2100 that were not used",
            ["machine", "tag"],
            registry=r,
        )
        self.plc_clock_steps = Counter(
            "valuegate_plc_clock_steps_total", "Steps of a PLC clock between two polls: forward, ahead (more than a day) or back", ["machine", "direction"],
            registry=r,
        )
        self.state_unmatched = Counter(
            "valuegate_state_unmatched_samples_total",
            "State evaluations where no state rule matched the inputs, so the map's default category applied",
            ["machine"],
            registry=r,
        )
        self.spool_rejected = Counter(
            "valuegate_spool_rejected_total", "State events, counter readings and watermarks rejected before the spool insert", ["machine"], registry=r
        )
        self.minutes_summarized = Counter("valuegate_minutes_summarized_total", "Per-minute records computed", ["machine"], registry=r)
        self.counts_left_out = Counter(
            "valuegate_counts_left_out_total", "Counter increments left out because the time since the reading before touches offline time", ["machine"], registry=r
        )
        self.counter_glitches = Counter(
            "valuegate_counter_glitches_total", "Counter readings rejected as glitches: a jump faster than max_rate_per_min", ["machine"], registry=r
        )
        self.device_connect_failures = Counter(
            "valuegate_device_connect_failures_total", "Failed PLC connection attempts, reported when the device answers again", ["device"], registry=r
        )
        self.device_reconnects = Counter("valuegate_device_reconnects_total", "PLC connections rebuilt after a loss", ["device"], registry=r)
        self.days_closed = Counter("valuegate_days_closed_total", "Plant days closed", ["machine"], registry=r)
        self.vouchers_issued = Counter("valuegate_vouchers_issued_total", "Vouchers signed and put in the outbox", registry=r)
        self.outbox_depth = Gauge("valuegate_outbox_depth", "Vouchers in the outbox that no cloud ack covers yet", registry=r)
        self.oldest_unacked_age = Gauge(
            "valuegate_oldest_unacked_voucher_age_seconds", "Age of the oldest voucher the cloud has not acknowledged", registry=r
        )
        self.unpublished_records = Gauge("valuegate_unpublished_records", "Per-minute records not yet accepted by the broker", registry=r)
        self.acked_through = Gauge("valuegate_acked_through", "Highest voucher sequence the cloud acknowledged", registry=r)
        self.publish_retries = Counter(
            "valuegate_publish_retries_total", "Times vouchers were published again (ack timeout, or a resend request for vouchers)", registry=r
        )
        self.resend_repeated_seq = Gauge(
            "valuegate_resend_repeated_from_seq",
            "Sequence the cloud requested again 3 or more times within 10 minutes, so it likely rejects it; 0 when none",
            registry=r,
        )
        self.acked_vouchers_resent = Counter(
            "valuegate_acked_vouchers_resent_total", "Acknowledged vouchers published again because the cloud asked for them (a restored cloud database)", registry=r
        )
        self.cloud_rejections = Counter(
            "valuegate_cloud_rejections_total", "Rejections the cloud reported in its acks (at most one a minute per kind and code)", ["kind", "code"], registry=r
        )
        self.publish_rejected = Counter("valuegate_publish_rejected_total", "PUBACKs with a failure reason code", registry=r)
        self.telemetry_batches = Counter("valuegate_telemetry_batches_total", "Telemetry messages published", registry=r)
        self.telemetry_records = Counter("valuegate_telemetry_records_total", "Per-minute records the broker accepted", registry=r)
        self.bad_control_messages = Counter("valuegate_bad_control_messages_total", "ack or resend messages that could not be read", registry=r)
        self.mqtt_connected = Gauge("valuegate_mqtt_connected", "1 while the broker connection is up", registry=r)
        self.mqtt_connect_failures = Counter("valuegate_mqtt_connect_failures_total", "Failed broker connection attempts", registry=r)
        self.mqtt_session_taken_over = Counter(
            "valuegate_mqtt_session_taken_over_total", "Times another client with this client id took the MQTT session over", registry=r
        )
        self.spool_bytes = Gauge("valuegate_spool_bytes", "Disk space the spool uses", registry=r)
        self.spool_alarm = Gauge("valuegate_spool_alarm", "1 while the spool is above its alarm level", registry=r)
        self.spool_pruned = Counter("valuegate_spool_pruned_rows_total", "Rows pruned from the spool", ["kind"], registry=r)

    def value(self, name: str, **labels: str) -> float:
        """Return the current value of a sample, 0 when it has not been recorded (for tests and health)."""
        found = self.registry.get_sample_value(name, labels or None)
        return float(found) if found is not None else 0.0


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class names it so
        pass


class MetricsServer:
    """Serves ``/metrics`` (Prometheus text format) and ``/healthz`` (JSON) on a background thread."""

    def __init__(self, metrics: AgentMetrics, health: Callable[[], dict[str, Any]], *, host: str, port: int) -> None:
        self.metrics = metrics
        self.health = health
        self.host = host
        self.port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            report = self.health()
            status = "200 OK" if report.get("ok") else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json")])
            return [json.dumps(report).encode()]
        return make_wsgi_app(self.metrics.registry)(environ, start_response)

    def start(self) -> MetricsServer:
        try:
            self._server = make_server(self.host, self.port, self._app, handler_class=_QuietHandler)
        except OSError as exc:
            hint = "another agent with this configuration may be running; stop it or set metrics.port to a free port"
            raise OSError(exc.errno, f"cannot serve health and metrics on {self.host}:{self.port}: {exc.strerror}; {hint}") from exc
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="valuegate-metrics", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; safe to call twice."""
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)
