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
"""

from __future__ import annotations

import resource
from typing import Any

from uvicorn_worker import UvicornWorker  # type: ignore[import-untyped]

# Descriptors per connection slot: the client's socket, and an upstream connection while a call is in flight.
DESCRIPTORS_PER_CONNECTION = 2
DESCRIPTORS_SPARE = 256


class Worker(UvicornWorker):  # type: ignore[misc]
    CONFIG_KWARGS: dict[str, Any] = {
        "loop": "uvloop",
        "http": "httptools",
        "proxy_headers": False,
        "server_header": False,
        "lifespan": "on",
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.limit_concurrency = self.cfg.worker_connections
        self.config.timeout_graceful_shutdown = self.cfg.graceful_timeout
        _raise_descriptor_limit(self.cfg.worker_connections * DESCRIPTORS_PER_CONNECTION + DESCRIPTORS_SPARE)


def _raise_descriptor_limit(wanted: int) -> None:
    """Raise the soft RLIMIT_NOFILE towards ``wanted`` (never above the hard limit, never lower it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < ceiling:
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
