"""Which addresses the worker may connect to.

Names are resolved here and the connection goes to the checked address, so a DNS answer that
changes between check and connect (rebinding) cannot reach a private host. Private, loopback,
link-local and other non-global addresses are refused unless the operator allows all of them
(INGEST_CRAWL_ALLOW_PRIVATE=1) or names the exact `host:port` (INGEST_CRAWL_ALLOW_HOSTS).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import SplitResult, urlsplit

SCHEMES = {"http": 80, "https": 443}


class FetchRefused(Exception):
    """The URL or its address is not allowed: the job's input is at fault."""


class Target:
    __slots__ = ("host", "ip", "parts", "port", "scheme")

    def __init__(self, parts: SplitResult, scheme: str, host: str, port: int, ip: str) -> None:
        self.parts = parts
        self.scheme = scheme
        self.host = host
        self.port = port
        self.ip = ip


class AddressPolicy:
    __slots__ = ("allow_hosts", "allow_private")

    def __init__(self, allow_private: bool, allow_hosts: frozenset[str]) -> None:
        self.allow_private = allow_private
        self.allow_hosts = allow_hosts

    def target(self, url: str) -> Target:
        """Check a URL and resolve its host to an address it is allowed to reach."""
        try:
            url.encode("utf-8")
            parts = urlsplit(url)
            port = parts.port
        except UnicodeError:
            raise FetchRefused("malformed URL (not valid Unicode)") from None
        except ValueError as exc:
            raise FetchRefused(f"malformed URL ({exc})") from None
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise FetchRefused(f"only http and https URLs are allowed, not {scheme or 'none'!r}")
        host = (parts.hostname or "").lower()
        if not host:
            raise FetchRefused("URL has no host")
        try:
            host.encode("idna")
        except UnicodeError:
            raise FetchRefused("malformed URL (host is not a valid domain name)") from None
        port = port or SCHEMES[scheme]
        exempt = self.allow_private or f"{host}:{port}" in self.allow_hosts
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
                raise FetchRefused(f"host {host!r} does not resolve") from None
            raise OSError(f"name resolution failed for {host!r}") from None
        addresses = [str(info[4][0]) for info in infos]
        if not addresses:
            raise FetchRefused(f"host {host!r} does not resolve")
        if not exempt:
            for address in addresses:
                if not is_public(address):
                    raise FetchRefused(
                        f"{host} resolves to a private or reserved address ({address}); not allowed"
                    )
        return Target(parts, scheme, host, port, addresses[0])


# IPv6 forms that carry an IPv4 address in their low 32 bits: NAT64's well-known prefix
# (RFC 6052), SIIT's IPv4-translated form and the deprecated IPv4-compatible form. A gateway
# or the kernel may deliver them to the embedded IPv4 address, so that address decides.
_EMBEDS_IPV4_LOW32 = (
    ipaddress.IPv6Network("64:ff9b::/96"),
    ipaddress.IPv6Network("::ffff:0:0:0/96"),
    ipaddress.IPv6Network("::/96"),
)
# Never global whatever they embed: NAT64's local-use prefix (RFC 8215), and the IETF
# protocol assignments block, of which Python counts only some addresses as private.
_NEVER_PUBLIC = (
    ipaddress.IPv6Network("64:ff9b:1::/48"),
    ipaddress.IPv4Network("192.0.0.0/24"),
)


def is_public(address: str) -> bool:
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(
        address.split("%", 1)[0]
    )
    if isinstance(ip, ipaddress.IPv6Address):
        ip = _embedded_ipv4(ip) or ip
    if any(ip.version == net.version and ip in net for net in _NEVER_PUBLIC):
        return False
    return ip.is_global and not ip.is_multicast


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, NAT64, ...), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in net for net in _EMBEDS_IPV4_LOW32):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None
