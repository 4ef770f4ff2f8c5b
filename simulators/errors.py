"""Errors the simulators raise while starting, carrying what failed as attributes."""

from __future__ import annotations

import socket

__all__ = ("ListenError", "bind_failure", "url_host")


def url_host(host: str) -> str:
    """Return ``host`` as it goes before ``:port`` in an address or URL: an IPv6 address in brackets (RFC 3986, section 3.2.2)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class ListenError(OSError):
    """A simulator's server cannot listen on ``host:port``; ``reason`` is the operating system's message."""

    def __init__(self, protocol: str, host: str, port: int, reason: str) -> None:
        self.protocol = protocol
        self.host = host
        self.port = port
        self.reason = reason
        super().__init__(
            f"cannot listen on {url_host(host)}:{port} for {protocol}: {reason}; "
            "choose a free port (0 picks one) and an address of this machine, such as 127.0.0.1"
        )


def bind_failure(host: str, port: int) -> str:
    """Return why a TCP listener cannot bind ``host:port``, found with a plain socket (pymodbus only reports that it failed)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        return exc.strerror or str(exc)
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's listeners do
        try:
            probe.bind(address)
        except OSError as exc:
            return exc.strerror or str(exc)
    return "the server failed to start listening"
