"""``Authorization: Bearer ak_...`` for the REST API, with the gateway's per-IP throttle of failures.

A key acts as its user: DRF's ``request.user`` is the key's user and ``request.auth`` the ``ApiKey``. Failed
attempts are counted per client IP (``aerostack.net.client_ip``, the trusted-proxy rule) in the same kind of
window as the gateway's (``GATEWAY_AUTH_FAILURE_RATE``); once an IP has too many, its *failures* get 429.
A valid key is always looked up and let in, so one misconfigured client behind a shared NAT address cannot
lock out its colleagues. Key-authenticated requests need no CSRF token (no browser sends the header by
itself); session-authenticated ones still do (DRF's ``SessionAuthentication``).
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from aerostack.net import client_ip
from api.models import ApiKey
from api.services import ApiKeyRefusal, api_key_authenticate, api_key_touch
from gateway import limits

logger = logging.getLogger("aerostack.api")
REALM = "aerostack-api"
REFUSAL_MESSAGES = {
    ApiKeyRefusal.MALFORMED: "Not an API key: API keys start with ak_ (create one under API keys)",
    ApiKeyRefusal.UNKNOWN: "Unknown API key",
    ApiKeyRefusal.REVOKED: "This API key was revoked",
    ApiKeyRefusal.EXPIRED: "This API key has expired",
    ApiKeyRefusal.INACTIVE_USER: "The account of this API key is disabled",
}


class TooManyFailures(exceptions.Throttled):
    default_detail = "Too many failed authentications"


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[User, ApiKey] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != "bearer":
            return None  # no key: session authentication (with CSRF) may still apply
        result = api_key_authenticate(raw=raw.strip())
        if result.key is not None:
            api_key_touch(result.key)
            return result.key.user, result.key
        assert result.refusal is not None
        limit, period = settings.GATEWAY_AUTH_FAILURE_LIMIT
        failures = limits.window("api:authfail", client_ip(request._request), period)
        if int(cache.get(failures.key) or 0) >= limit:
            raise TooManyFailures(wait=failures.reset)
        count, _ = limits.hit(failures, period)
        if count == limit:
            logger.warning(
                "api: %s failed authentications from %s; its failures get 429 for up to %s s",
                count,
                client_ip(request._request),
                failures.reset,
            )
        raise exceptions.AuthenticationFailed(REFUSAL_MESSAGES[result.refusal])

    def authenticate_header(self, request: Request) -> str:
        return f'Bearer realm="{REALM}"'


class PerKeyRateThrottle(BaseThrottle):
    """``API_RATE_LIMIT`` requests a minute per API key (per user for browser sessions), in the shared cache:
    every worker and node counts in the same window."""

    def __init__(self) -> None:
        self.reset = 0

    def allow_request(self, request: Request, view: Any) -> bool:
        if isinstance(request.auth, ApiKey):
            ident = f"key:{request.auth.pk}"
        elif request.user is not None and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            return True  # anonymous requests are refused by the permission check anyway
        current = limits.window("api:rate", ident, 60)
        count, _ = limits.hit(current, 60)
        self.reset = current.reset
        limit = settings.API_RATE_LIMIT
        # Read by ApiView.finalize_response (draft-ietf-httpapi-ratelimit-headers), on refusals too.
        request.rate_limit_headers = {  # type: ignore[attr-defined]
            "RateLimit-Policy": f'"per-key";q={limit};w=60',
            "RateLimit": f'"per-key";r={max(limit - count, 0)};t={current.reset}',
        }
        return count <= limit

    def wait(self) -> float:
        return float(self.reset)
