"""Aerostack's gunicorn worker: uvicorn's event loop serving ``aerostack.asgi:application``.

``--worker-class aerostack.worker.Worker`` (set in gunicorn.conf.py). Every connection lives in the event loop
(uvloop + httptools: the fastest combination measured, docs/architecture.md), so idle keep-alive connections,
clients that trickle their headers and open streams hold no thread; requests run in the thread lanes of
aerostack/serving.py. What differs from uvicorn's stock worker, and why:

- ``proxy_headers`` off: uvicorn would rewrite the client address from ``X-Forwarded-For`` for any peer in
  gunicorn's ``forwarded_allow_ips``; Aerostack resolves the client itself (aerostack/net.py,
  TRUSTED_PROXIES),
  exactly as under a WSGI server.
- no ``Server`` header (nothing to advertise).
- gunicorn's ``worker_connections`` becomes uvicorn's ``limit_concurrency``: beyond it new requests get 503
  instead of the process running out of file descriptors; the soft descriptor limit is raised to fit it.
- gunicorn's ``graceful_timeout`` bounds uvicorn's graceful shutdown.
- a deadline for a request's headers (``SERVER_HEADER_TIMEOUT_SECONDS``, 20 s, from the request's first byte)
  and for a new connection's first byte (gunicorn's ``keepalive``): uvicorn has neither, so a slowloris
  client, which costs no thread here, would otherwise keep its connection slot for ever.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker  # type: ignore[import-untyped]

from aerostack.access_log import RedactingFilter
from aerostack.environ import env_int

# Read here, not in settings.py: the worker class is set up before the Django application is loaded.
HEADER_TIMEOUT_SECONDS = env_int("SERVER_HEADER_TIMEOUT_SECONDS", 20, minimum=1, maximum=3600)

# Descriptors per connection slot: the client's socket, and an upstream connection while a call is in flight.
DESCRIPTORS_PER_CONNECTION = 2
DESCRIPTORS_SPARE = 256


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with two deadlines it lacks: a new connection must send its first byte
    within the keep-alive timeout, and a request's headers must be complete ``HEADER_TIMEOUT_SECONDS`` after
    its first byte. Past either, the connection is closed. (Between requests uvicorn's own keep-alive timer
    applies; the body is read without a thread and has the application's timeouts.)"""

    _header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(float(self.timeout_keep_alive))

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm(float(HEADER_TIMEOUT_SECONDS))

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._header_deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _expired(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


class Worker(UvicornWorker):  # type: ignore[misc]
    CONFIG_KWARGS: dict[str, Any] = {
        "loop": "uvloop",
        "http": HeaderDeadlineProtocol,
        "proxy_headers": False,
        "server_header": False,
        "lifespan": "on",
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.limit_concurrency = self.cfg.worker_connections
        self.config.timeout_graceful_shutdown = self.cfg.graceful_timeout
        # Invite and password-reset links carry a secret in their path: uvicorn's access log must not keep it.
        logging.getLogger("uvicorn.access").addFilter(RedactingFilter())
        _raise_descriptor_limit(self.cfg.worker_connections * DESCRIPTORS_PER_CONNECTION + DESCRIPTORS_SPARE)


def _raise_descriptor_limit(wanted: int) -> None:
    """Raise the soft RLIMIT_NOFILE towards ``wanted`` (never above the hard limit, never lower it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < ceiling:
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
