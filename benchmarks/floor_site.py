"""The framework floor for ``make bench``: the least a gunicorn + Django + DRF forwarding view can add.

A whole Django project in one module (settings, URLconf, view), served by the same gunicorn worker class and
thread count as Aerostack. Its one view forwards the POST body to ``BENCH_UPSTREAM_URL`` over a keep-alive
``http.client`` connection per thread and sends the upstream's answer back: no token, rate limit, session,
catalog, usage log, middleware or database. What this path adds over calling the upstream directly is the
cost of the mandated stack itself; what the gateway adds on top of that is Aerostack's own work.

Started by ``benchmarks.gateway`` (``DJANGO_SETTINGS_MODULE=benchmarks.floor_site``); not part of the product.
"""

from __future__ import annotations

import http.client
import os
import secrets
import socket
import threading
from typing import Any
from urllib.parse import urlsplit

from django.http import HttpResponse
from django.urls import path
from rest_framework.request import Request
from rest_framework.views import APIView

SECRET_KEY = secrets.token_urlsafe(50)
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "rest_framework"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "benchmarks.floor_site"
DATABASES: dict[str, Any] = {}
USE_TZ = True
REST_FRAMEWORK = {"UNAUTHENTICATED_USER": None}

FORWARDED = ("HTTP_ACCEPT", "CONTENT_TYPE", "HTTP_MCP_SESSION_ID", "HTTP_MCP_PROTOCOL_VERSION")
_upstream = urlsplit(os.environ.get("BENCH_UPSTREAM_URL", "http://127.0.0.1/"))
_local = threading.local()


def _connection() -> http.client.HTTPConnection:
    connection: http.client.HTTPConnection | None = getattr(_local, "connection", None)
    if connection is None:
        connection = http.client.HTTPConnection(_upstream.hostname or "127.0.0.1", _upstream.port, timeout=30)
        connection.connect()
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _local.connection = connection
    return connection


class Forward(APIView):
    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    parser_classes: list[Any] = []

    def post(self, request: Request) -> HttpResponse:
        meta = request._request.META
        headers = {
            ("Content-Type" if name == "CONTENT_TYPE" else name[5:].replace("_", "-")): meta[name]
            for name in FORWARDED
            if meta.get(name)
        }
        connection = _connection()
        try:
            connection.request("POST", _upstream.path, body=request._request.body, headers=headers)
            reply = connection.getresponse()
            body = reply.read()
        except (OSError, http.client.HTTPException):
            connection.close()
            _local.connection = None
            raise
        response = HttpResponse(body, status=reply.status, content_type=reply.getheader("Content-Type"))
        session = reply.getheader("Mcp-Session-Id")
        if session:
            response["Mcp-Session-Id"] = session
        return response


urlpatterns = [path("mcp", Forward.as_view())]
