"""ASGI entry point: what ``make run``, the tests and a deployment serve
(``gunicorn aerostack.asgi:application`` with the worker class of ``gunicorn.conf.py``).

Two lanes of reusable threads (see aerostack/serving.py): the MCP gateway (``/ws/...``), whose requests may
wait on an upstream for minutes, and everything else (dashboard, API, admin, static files), whose requests are
short. A full gateway lane answers a JSON-RPC error at once; a full dashboard lane a plain 503 page. Both run
the synchronous Django code of ``aerostack.wsgi.application`` (which keeps the gateway's lean middleware).
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aerostack.settings")

from django.conf import settings

from aerostack.serving import Front, Headers, Lane
from aerostack.wsgi import GATEWAY_PREFIX
from aerostack.wsgi import application as wsgi_application
from gateway import protocol

RETRY_AFTER_SECONDS = 1


def _gateway_busy(body: bytes) -> tuple[int, Headers, bytes]:
    """503 with a JSON-RPC error that names the request's id when the body has a readable one."""
    request_id: protocol.RequestId | None = None
    try:
        message = json.loads(body)
        candidate = message.get("id") if isinstance(message, dict) else None
        if isinstance(candidate, str | int) and not isinstance(candidate, bool):
            request_id = candidate
    except ValueError:
        pass
    error = protocol.error_body(
        request_id,
        protocol.SERVER_ERROR,
        f"Gateway busy: {gateway_lane.bound} requests in flight on this server; retry shortly",
    )
    headers: Headers = [
        (b"content-type", b"application/json"),
        (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
    ]
    return 503, headers, json.dumps(error, separators=(",", ":")).encode("utf-8")


def _dashboard_busy(body: bytes) -> tuple[int, Headers, bytes]:
    headers: Headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
    ]
    return 503, headers, b"Aerostack is busy right now: please retry in a moment.\n"


gateway_lane = Lane(
    name="gateway",
    threads=settings.SERVER_GATEWAY_THREADS,
    # The view answers 413 for anything above GATEWAY_MAX_BODY_BYTES: one byte more tells it so.
    max_body=settings.GATEWAY_MAX_BODY_BYTES,
    busy=_gateway_busy,
)
dashboard_lane = Lane(
    name="dashboard",
    threads=settings.SERVER_DASHBOARD_THREADS,
    queue=settings.SERVER_DASHBOARD_QUEUE,
    max_body=settings.SERVER_DASHBOARD_MAX_BODY_BYTES,
    busy=_dashboard_busy,
)


def _route(path: str) -> Lane:
    return gateway_lane if path.startswith(GATEWAY_PREFIX) else dashboard_lane


application = Front(
    wsgi_application,
    _route,
    [gateway_lane, dashboard_lane],
    body_budget=settings.SERVER_MAX_BUFFERED_BODY_BYTES,
)
