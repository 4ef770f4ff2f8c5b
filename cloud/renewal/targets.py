"""Webhook targets: which IP addresses a delivery may connect to, and webhook URLs with their credentials masked.

A tenant administrator chooses the webhook URL, so without a check the cloud
would send requests for them to its own loopback services, the cloud
provider's metadata address or the operator's internal network. Only public
unicast addresses are allowed, unless the operator lists a network in the
setting ``webhook_allowed_networks``. A host name is resolved first and every
address it resolves to must pass. The delivery then connects to the checked
address, so that a second DNS answer cannot swap it for another one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit, urlunsplit

__all__ = ("ALLOWED_NETWORKS_SETTING", "Address", "Network", "TargetRejected", "HostUnresolved", "parse_networks", "rejection_reason",
           "check_address", "resolve_target", "allows_every_address", "mask_url")

ALLOWED_NETWORKS_SETTING = "webhook_allowed_networks"
MASK = "***"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# The NAT64 well-known prefix (RFC 6052): its last 32 bits are an IPv4 address that the translator connects to.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_EVERY_IPV4 = ipaddress.ip_network("0.0.0.0/0")
_EVERY_IPV6 = ipaddress.ip_network("::/0")


class TargetRejected(ValueError):
    """A webhook host is, or resolves to, an address that deliveries may not reach; the message names the host, the address and the setting."""

    def __init__(self, host: str, address: Address, reason: str) -> None:
        resolved = f"webhook host {host!r}" if host == str(address) else f"webhook host {host!r} resolves to {address}, which"
        article = "an" if reason[0] in "aeiou" else "a"
        super().__init__(
            f"{resolved} is {article} {reason} address; webhooks go only to public addresses unless the cloud setting "
            f"{ALLOWED_NETWORKS_SETTING} lists a network that contains it"
        )
        self.host = host
        self.address = address
        self.reason = reason


class HostUnresolved(OSError):
    """A webhook host name has no address in DNS (or in the hosts file)."""

    def __init__(self, host: str, error: str) -> None:
        super().__init__(f"webhook host {host!r} could not be resolved ({error}); check the host name")
        self.host = host


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """Parse CIDR networks such as ``10.20.0.0/16`` or ``::1/128``; raise ValueError naming the first invalid one."""
    networks: list[Network] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip()))
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a network in CIDR notation ({exc}); write it as 10.20.0.0/16 or fd00::/8") from exc
    return tuple(networks)


def allows_every_address(allowed: Sequence[Network]) -> bool:
    """Return whether ``allowed`` contains 0.0.0.0/0 and ::/0, which turns the address check off."""
    return _EVERY_IPV4 in allowed and _EVERY_IPV6 in allowed


def _embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """Return the IPv4 address that an IPv4-mapped, 6to4 or NAT64 address reaches; None for other addresses."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _category(address: Address) -> str | None:
    """Name the special-purpose range ``address`` belongs to; None for a public unicast address."""
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_reserved:
        return "reserved"
    if address.is_private:
        # Python's is_private covers RFC 1918, fc00::/7 and the other IANA special-purpose ranges that are not globally reachable.
        return "private"
    if not address.is_global:
        return "non-public"  # for example the shared address space 100.64.0.0/10 of carrier-grade NAT
    return None


def rejection_reason(address: Address, allowed: Sequence[Network]) -> str | None:
    """Return why deliveries may not connect to ``address`` (such as ``"loopback"``), or None when they may."""
    if any(address in network for network in allowed if network.version == address.version):
        return None
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        if any(embedded in network for network in allowed if network.version == 4):
            return None
        return _category(embedded)
    return _category(address)


def check_address(host: str, address: Address, allowed: Sequence[Network]) -> None:
    """Raise :class:`TargetRejected` when deliveries may not connect to ``address``, which ``host`` resolved to."""
    reason = rejection_reason(address, allowed)
    if reason is not None:
        raise TargetRejected(host, address, reason)


async def resolve_target(host: str, port: int, allowed: Sequence[Network]) -> Address | None:
    """Return the address a delivery to ``host`` connects to, after checking every address the host resolves to.

    An IP address is checked as it is. A host name is resolved with the system
    resolver, and it is rejected when any of its addresses is not allowed,
    because a later connection could pick that one. Returns None, without a
    DNS query, when ``allowed`` contains every address. Raises
    :class:`TargetRejected` or :class:`HostUnresolved`.
    """
    if allows_every_address(allowed):
        return None
    try:
        literal: Address | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        check_address(host, literal, allowed)
        return literal
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise HostUnresolved(host, str(exc)) from exc
    # The scope id of an IPv6 link-local result ("fe80::1%eth0") is dropped, because such an address is rejected anyway unless allowed.
    addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos))
    if not addresses:
        raise HostUnresolved(host, "no address returned")
    for address in addresses:
        check_address(host, address, allowed)
    return addresses[0]


def _mask_query(query: str) -> str:
    # Each name=value pair keeps its name. A piece without "=" may itself be a secret, so all of it is masked.
    pieces = []
    for piece in query.split("&"):
        if "=" in piece:
            pieces.append(f"{piece.partition('=')[0]}={MASK}")
        else:
            pieces.append(MASK if piece else "")
    return "&".join(pieces)


def mask_url(url: str) -> str:
    """Return ``url`` fit for logs, pages, the API and the audit log: user info, query values and fragment show as ``***``.

    ``https://u:p@crm.example.com/h?token=abc&site=x`` becomes
    ``https://***@crm.example.com/h?token=***&site=***``. Migration
    0055_mask_webhook_urls.sql masks stored URLs the same way, so the two must
    change together. A URL that cannot be parsed shows only its scheme.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://{MASK}" if rest else MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    query = _mask_query(parts.query) if parts.query else ""
    fragment = MASK if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))
