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
import time
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
ROOT_URLCONF = __name__  # also when a baseline serves a copy of this file under another name
DATABASES: dict[str, Any] = {}
USE_TZ = True
REST_FRAMEWORK = {"UNAUTHENTICATED_USER": None}

FORWARDED = ("HTTP_ACCEPT", "CONTENT_TYPE", "HTTP_MCP_SESSION_ID", "HTTP_MCP_PROTOCOL_VERSION")
_upstream = urlsplit(os.environ.get("BENCH_UPSTREAM_URL", "http://127.0.0.1/"))
_local = threading.local()
# As the gateway's upstream pool (gateway/upstream.py): a connection idle this long is not reused (uvicorn
# closes idle keep-alive connections after 5 s), and a reused one the upstream closed is retried once on a
# new one. Without this the floor answered 500 whenever a round of the other paths' blocks took longer than
# the upstream's keep-alive, as it does on a loaded machine.
IDLE_SECONDS = 4.0
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


def _connection(fresh: bool) -> tuple[http.client.HTTPConnection, bool]:
    """This thread's keep-alive connection (True: reused) or a new one (False)."""
    connection: http.client.HTTPConnection | None = getattr(_local, "connection", None)
    if connection is not None and (fresh or time.monotonic() - _local.idle_since >= IDLE_SECONDS):
        connection.close()
        connection = None
    if connection is not None:
        return connection, True
    connection = http.client.HTTPConnection(_upstream.hostname or "127.0.0.1", _upstream.port, timeout=30)
    connection.connect()
    connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _local.connection = connection
    return connection, False


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
        body = request._request.body
        for attempt in range(2):
            connection, reused = _connection(fresh=attempt > 0)
            try:
                connection.request("POST", _upstream.path, body=body, headers=headers)
                reply = connection.getresponse()
                content = reply.read()
            except _STALE:
                connection.close()
                _local.connection = None
                if reused and not attempt:
                    continue  # the upstream closed an idle keep-alive connection: once more on a new one
                raise
            except (OSError, http.client.HTTPException):
                connection.close()
                _local.connection = None
                raise
            _local.idle_since = time.monotonic()
            break
        response = HttpResponse(content, status=reply.status, content_type=reply.getheader("Content-Type"))
        session = reply.getheader("Mcp-Session-Id")
        if session:
            response["Mcp-Session-Id"] = session
        return response


urlpatterns = [path("mcp", Forward.as_view())]
