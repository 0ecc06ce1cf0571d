"""Refuse upstream URLs that would make the gateway reach into private networks (SSRF)."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings


class UpstreamAddressRefused(ValueError):
    pass


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_upstream_url(url: str, *, resolve: bool = True) -> None:
    """Raise ``UpstreamAddressRefused`` unless ``url`` is http(s) to a public address.

    Every address the host resolves to must be public, so a name that resolves to both a public and an
    internal address is refused too. ``ALLOW_PRIVATE_UPSTREAMS`` lifts the address rule (a laptop, tests).
    """
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise UpstreamAddressRefused("Use an http:// or https:// URL.")
    if parts.username or parts.password:
        raise UpstreamAddressRefused("Put credentials in the credential field, not in the URL.")
    if settings.ALLOW_PRIVATE_UPSTREAMS or not resolve:
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        raise UpstreamAddressRefused(f"The host {parts.hostname!r} cannot be resolved.") from exc
    for info in infos:
        address = str(info[4][0])
        if not _is_public(address):
            raise UpstreamAddressRefused(
                f"{parts.hostname} resolves to {address}, a private, loopback or link-local address. "
                "Set ALLOW_PRIVATE_UPSTREAMS=true to allow it."
            )
