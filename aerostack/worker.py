"""gunicorn's threaded worker with a keep-alive fast path: ``--worker-class aerostack.worker.ThreadWorker``.

gunicorn's ``gthread`` worker keeps idle keep-alive connections in its main thread's poller and hands each
request to a pool thread and back: per request an ``epoll`` change, a thread-pool hand-off, a pipe write to
wake the main thread and a second ``epoll`` change, with the GIL passed between threads at each step. On a
2-core machine that costs ~0.3 ms per request, about a third of what the MCP gateway may add to a call.
MCP clients send their requests on one keep-alive connection, one after the other: here the pool thread that
answered a request waits briefly for the next one on the same connection and serves it itself.

The waiting is bounded so that threads are never tied to idle clients: a thread lingers for at most
``LINGER_SECONDS``, only while at least one other pool thread is free for new connections, and never while
the worker shuts down. Everything else (parsing, limits, timeouts, graceful shutdown, HTTP/2) is gthread's.
"""

from __future__ import annotations

import select
import threading
from typing import Any

from gunicorn.workers import gthread

LINGER_SECONDS = 0.002


class ThreadWorker(gthread.ThreadWorker):  # type: ignore[misc]
    """``gthread`` whose pool threads serve a keep-alive connection's back-to-back requests themselves."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._busy = 0
        self._busy_lock = threading.Lock()

    def handle(self, conn: Any) -> Any:
        with self._busy_lock:
            self._busy += 1
        try:
            keepalive = super().handle(conn)
            while keepalive is True and self._next_request_arrives(conn):
                keepalive = super().handle(conn)
            return keepalive
        finally:
            with self._busy_lock:
                self._busy -= 1

    def _next_request_arrives(self, conn: Any) -> bool:
        """True when the connection's next request is (or soon is) readable and this thread may serve it."""
        if not self.alive or conn.is_http2:
            return False
        if conn.parser.unreader.buf.getvalue():
            return True  # pipelined bytes already read: the poller would never see them
        if self._busy >= self.cfg.threads:
            return False  # every other thread is busy: new connections must not wait for this one
        poller = select.poll()
        poller.register(conn.sock, select.POLLIN)
        return bool(poller.poll(LINGER_SECONDS * 1000))
