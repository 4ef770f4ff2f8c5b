"""Runs a paho-mqtt client's socket I/O on the asyncio event loop instead of a network thread of its own.

With paho's own thread, every PUBACK crossed from that thread to the event
loop and every publish woke that thread again, and the two threads
competed for the GIL. Here paho reads when the loop reports the socket
readable, writes when it reports it writable, and runs its callbacks on
the loop's thread. paho supports this through its socket callbacks
(``on_socket_open``, ``on_socket_register_write`` and the rest). These
may also fire on the thread that runs the blocking ``connect``, so such
calls are passed to the loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from typing import Any

import paho.mqtt.client as mqtt

__all__ = ("LoopBridge",)

# Read passes per readable event while TLS has buffered decrypted bytes that the selector cannot report.
_MAX_PENDING_PASSES = 64


class LoopBridge:
    """Bridge between one paho client and the event loop.

    Attach it to ``client`` before ``connect``, call :meth:`misc` about once a
    second and :meth:`close` at the end. ``read_packets`` is the maximum number
    of packets read per readable event from a plain TCP socket that still
    contains data. With 1, the event loop reads one packet per pass of its
    selector. A client that receives bursts of messages drains them in fewer
    passes with a higher value.
    """

    def __init__(self, client: mqtt.Client, loop: asyncio.AbstractEventLoop, *, read_packets: int = 1) -> None:
        if read_packets < 1:
            raise ValueError(f"read_packets must be at least 1, got {read_packets}")
        self.client = client
        self.loop = loop
        self.read_packets = read_packets
        self._thread = threading.get_ident()
        self._fds: set[int] = set()
        self.closed = asyncio.Event()
        client.on_socket_open = self._on_open
        client.on_socket_close = self._on_close
        client.on_socket_register_write = self._on_want_write
        client.on_socket_unregister_write = self._on_done_writing

    def run_on_loop(self, function: Any, *args: Any) -> None:
        """Call ``function(*args)`` now on the loop's thread, or schedule it there from any other thread."""
        # Once the loop is closed, no socket is registered any more, so a socket that paho closes later (in its finalizer) needs no work.
        if self.loop.is_closed():
            return
        if threading.get_ident() == self._thread:
            function(*args)
            return
        with contextlib.suppress(RuntimeError):  # the loop closed since the check
            self.loop.call_soon_threadsafe(function, *args)

    def _on_open(self, _client: Any, _userdata: Any, sock: Any) -> None:
        self.run_on_loop(self._watch, sock.fileno())

    def _on_close(self, _client: Any, _userdata: Any, sock: Any) -> None:
        self.run_on_loop(self._forget, sock.fileno())

    def _on_want_write(self, _client: Any, _userdata: Any, sock: Any) -> None:
        self.run_on_loop(self._want_write, sock.fileno())

    def _on_done_writing(self, _client: Any, _userdata: Any, sock: Any) -> None:
        self.run_on_loop(self._done_writing, sock.fileno())

    def _watch(self, fd: int) -> None:
        self._fds.add(fd)
        self.closed.clear()
        self.loop.add_reader(fd, self._readable)

    def _forget(self, fd: int) -> None:
        if fd in self._fds:
            self._fds.discard(fd)
            self.loop.remove_reader(fd)
            self.loop.remove_writer(fd)
        self.closed.set()

    def _want_write(self, fd: int) -> None:
        if fd in self._fds:
            self.loop.add_writer(fd, self._writable)

    def _done_writing(self, fd: int) -> None:
        if fd in self._fds:
            self.loop.remove_writer(fd)

    def _readable(self) -> None:
        passes = 0
        while True:
            if self.client.loop_read() != mqtt.MQTT_ERR_SUCCESS:
                return  # paho closed the socket and reported the disconnect
            passes += 1
            sock = self.client.socket()
            if isinstance(sock, ssl.SSLSocket):
                # A TLS record can carry more packets than one read consumed, and the selector cannot report those buffered bytes.
                if sock.pending() == 0 or passes > _MAX_PENDING_PASSES:
                    return
            elif sock is None or passes >= self.read_packets or not _has_data(sock):
                return

    def _writable(self) -> None:
        self.client.loop_write()

    def misc(self) -> None:
        """Send keep-alive pings and drop a connection whose ping went unanswered."""
        self.client.loop_misc()

    async def close(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for paho to close its socket after ``disconnect``, then stop watching it regardless."""
        if self._fds:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closed.wait(), timeout_s)
        for fd in list(self._fds):
            self._forget(fd)
        sock = self.client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()


def _has_data(sock: socket.socket) -> bool:
    """Return whether the non-blocking socket has bytes to read now; end of stream counts as none, the selector reports it."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except OSError:  # BlockingIOError when nothing is buffered; any other error the next read reports
        return False
