"""The client's IP address, resolved through the trusted-proxy setting."""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def _is_trusted_proxy(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in settings.TRUSTED_PROXIES)


def client_ip(request: HttpRequest) -> str:
    """The address of the client that talks to us.

    ``X-Forwarded-For`` is read only when the direct peer is a configured trusted proxy, and then from the
    right: the first address that is not itself a trusted proxy is the client. A client cannot choose its own
    address by sending the header, so it cannot slip out of a per-IP throttle.
    """
    peer = request.META.get("REMOTE_ADDR", "") or ""
    if not settings.TRUSTED_PROXIES or not _is_trusted_proxy(peer):
        return peer
    forwarded = [
        part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()
    ]
    for address in reversed(forwarded):
        if not _is_trusted_proxy(address):
            try:
                return str(ipaddress.ip_address(address))
            except ValueError:
                return peer
    return peer


def client_ip_key(group: str, request: HttpRequest) -> str:
    """django-ratelimit key function."""
    return client_ip(request)
