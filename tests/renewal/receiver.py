"""A local HTTP receiver for webhook tests: it responds with scripted status codes and keeps every request."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from valuegate.cloud.renewal.targets import parse_networks

# The setting webhook_allowed_networks of tests whose receiver listens on loopback, which deliveries reject by default.
LOOPBACK_NETWORKS = ["127.0.0.0/8", "::1/128"]
LOOPBACK = parse_networks(LOOPBACK_NETWORKS)


@contextmanager
def receiver(statuses: list[int], *, gate: threading.Event | None = None) -> Iterator[tuple[str, list[dict]]]:
    """Serve on a free 127.0.0.1 port; the n-th request gets ``statuses[n]`` (the last one repeats).

    With ``gate``, each request is kept at once but responded to only once the gate is set, so that a test can act while a delivery waits.
    The gate is set on exit, so that no request stays blocked.
    """
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the name http.server dispatches to
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body, "path": self.path})
            status = statuses[min(len(received) - 1, len(statuses) - 1)]
            if gate is not None and not gate.wait(timeout=30):
                raise RuntimeError("the receiver's gate was not opened within 30 s")
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/renewal", received
    finally:
        if gate is not None:
            gate.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
