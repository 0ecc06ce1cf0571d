"""WSGI entry point.

Requests for the MCP gateway (``/ws/...``) go through a handler with a lean middleware chain: the dashboard's
session, authentication, CSRF, messages and page-header middleware do nothing for a bearer-token JSON-RPC
endpoint but cost ~0.17 ms per request, which is most of Django's share of a gateway call. The handler also
resolves the path against the gateway's own URLconf (one pattern) rather than walking every dashboard and
admin pattern first; ``reverse()`` still uses ``ROOT_URLCONF``. Everything else goes through the full chain
of ``settings.MIDDLEWARE``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from django.core.handlers.exception import convert_exception_to_response
from django.core.handlers.wsgi import WSGIHandler
from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest
from django.urls import ResolverMatch, get_resolver
from django.utils.module_loading import import_string

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aerostack.settings")

GATEWAY_PREFIX = "/ws/"
GATEWAY_MIDDLEWARE = ["django.middleware.security.SecurityMiddleware"]
GATEWAY_URLCONF = "gateway.urls"


class GatewayHandler(WSGIHandler):
    """A WSGIHandler whose middleware chain is ``GATEWAY_MIDDLEWARE`` instead of ``settings.MIDDLEWARE``."""

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware: list[Any] = []
        self._template_response_middleware: list[Any] = []
        self._exception_middleware: list[Any] = []
        handler = convert_exception_to_response(self._get_response)  # type: ignore[attr-defined]
        for path in reversed(GATEWAY_MIDDLEWARE):
            handler = convert_exception_to_response(import_string(path)(handler))
        self._middleware_chain = handler

    def resolve_request(self, request: HttpRequest) -> ResolverMatch:
        match = get_resolver(GATEWAY_URLCONF).resolve(request.path_info)
        request.resolver_match = match
        return match


_dashboard = get_wsgi_application()  # also runs django.setup()
_gateway = GatewayHandler()


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO", "").startswith(GATEWAY_PREFIX):
        return _gateway(environ, start_response)
    return _dashboard(environ, start_response)
