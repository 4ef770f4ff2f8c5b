"""Prometheus metrics of the cloud service: ingest counters, rejections by reason, HTTP requests."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest, start_http_server

__all__ = (
    "VOUCHERS_STORED",
    "VOUCHERS_DUPLICATE",
    "REJECTIONS",
    "TELEMETRY_ROWS",
    "RESEND_REQUESTS",
    "ACKS_SENT",
    "REJECTION_NOTICES",
    "CHAIN_GAPS",
    "BATCH_SECONDS",
    "REPRODUCED",
    "WAITING_FOR_RECORDS",
    "VOUCHERS_PENDING",
    "HTTP_REQUESTS",
    "HTTP_SECONDS",
    "exposition",
    "serve_exposition",
)

VOUCHERS_STORED = Counter("valuegate_vouchers_stored_total", "Vouchers verified and stored.")
VOUCHERS_DUPLICATE = Counter("valuegate_vouchers_duplicate_total", "Vouchers received again with content already stored (no-op, acked).")
REJECTIONS = Counter("valuegate_ingest_rejections_total", "Rejected ingest messages by kind and reason code.", ["kind", "code"])
TELEMETRY_ROWS = Counter("valuegate_telemetry_rows_total", "Per-minute telemetry records stored (new rows only).")
RESEND_REQUESTS = Counter("valuegate_resend_requests_total", "Resend requests published to gateways for chain gaps.")
ACKS_SENT = Counter("valuegate_acks_sent_total", "Ack messages published to gateways.")
REJECTION_NOTICES = Counter("valuegate_rejection_notices_total", "Acks that told a gateway why the cloud rejected one of its messages.")
CHAIN_GAPS = Gauge(
    "valuegate_chain_gap_gateways", "Gateways whose stored chain has a gap (a stored sequence above the contiguous run), read from the database."
)
BATCH_SECONDS = Histogram("valuegate_ingest_batch_seconds", "Time to verify and store one ingest batch.")
REPRODUCED = Counter("valuegate_vouchers_reproduced_total", "Vouchers recomputed from stored records, by outcome.", ["outcome"])
WAITING_FOR_RECORDS = Gauge(
    "valuegate_vouchers_waiting_for_records",
    "Pending vouchers stored longer than records_wait_s whose last attempt found records or baseline records missing, read from the database.",
)
VOUCHERS_PENDING = Gauge("valuegate_vouchers_pending", "Vouchers without a reproduction verdict yet, tried or not, read from the database.")
HTTP_REQUESTS = Counter("valuegate_http_requests_total", "HTTP requests by method, route and status.", ["method", "route", "status"])
HTTP_SECONDS = Histogram("valuegate_http_request_seconds", "HTTP request latency by route.", ["route"])


def exposition() -> tuple[bytes, str]:
    """Return the text exposition of every metric and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def serve_exposition(host: str, port: int) -> Callable[[], None]:
    """Serve every metric at ``http://host:port/metrics`` from a background thread; return the function that stops it.

    Raises OSError when the address cannot be bound, for example when another process has the port.
    """
    server, thread = start_http_server(port, addr=host)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
