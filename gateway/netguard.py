"""Refuse upstream URLs that would make the gateway reach into private networks (SSRF).

The addresses are checked when a server is saved and again each time the gateway opens a connection, and the
connection then goes to exactly the addresses that were checked (``resolve_upstream``): a name that resolves
to a public address for the check and to 127.0.0.1 a moment later (DNS rebinding) gets nowhere.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from urllib.parse import urlsplit

from django.conf import settings

logger = logging.getLogger(__name__)

# IPv6 ranges that carry an IPv4 address inside (NAT64, the deprecated IPv4-compatible form).
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class UpstreamAddressRefused(ValueError):
    pass


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL:
            return False  # a local NAT64 prefix: where it leads is not knowable here
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and (ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1)):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return embedded.is_global and not embedded.is_multicast
    return ip.is_global and not ip.is_multicast


def _parts(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise UpstreamAddressRefused("Use an http:// or https:// URL.")
    if parts.username or parts.password:
        raise UpstreamAddressRefused("Put credentials in the credential field, not in the URL.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UpstreamAddressRefused("The URL has an invalid port.") from None
    return parts.hostname, port


def resolve_upstream(url: str) -> list[str]:
    """The addresses to connect to for ``url``, every one of them checked.

    Every address the host resolves to must be public, so a name that resolves to both a public and an
    internal address is refused too. ``ALLOW_PRIVATE_UPSTREAMS`` lifts the address rule (a laptop, tests).
    """
    host, port = _parts(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UpstreamAddressRefused(f"The host {host!r} cannot be resolved.") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not settings.ALLOW_PRIVATE_UPSTREAMS:
        for address in addresses:
            if not _is_public(address):
                # The message reaches dashboard users and gateway clients: it names the host they gave,
                # never the address it resolved to (that would map the internal network for them). The
                # operator finds the address in the log.
                logger.info("upstream host %s refused: it resolves to %s", host, address)
                raise UpstreamAddressRefused(
                    f"{host} resolves to a private, loopback or link-local address. "
                    "Set ALLOW_PRIVATE_UPSTREAMS=true to allow it."
                )
    return addresses


def check_upstream_url(url: str) -> None:
    """Raise ``UpstreamAddressRefused`` unless ``url`` is an acceptable upstream URL."""
    _parts(url)
    if not settings.ALLOW_PRIVATE_UPSTREAMS:  # when allowed, there is nothing to refuse
        resolve_upstream(url)
