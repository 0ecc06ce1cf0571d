"""aerostack.worker.ThreadWorker: gthread with a keep-alive fast path.

The decision (serve the next request in this thread or hand the connection back to the poller) is tested on
real sockets; the worker as a whole under a real gunicorn, with pipelined requests, more connections than
threads, and a shutdown while connections are kept alive.
"""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from aerostack.worker import ThreadWorker
from tests.live import LiveServer, live_server


@pytest.fixture
def sockets() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, peer = socket.socketpair()
    yield ours, peer
    ours.close()
    peer.close()


def _worker(*, threads: int, busy: int, alive: bool = True) -> Any:
    worker = ThreadWorker.__new__(ThreadWorker)  # the decision needs no arbiter, sockets or pool
    worker.alive = alive
    worker.cfg = SimpleNamespace(threads=threads)
    worker._busy = busy
    return worker


def _conn(sock: socket.socket, buffered: bytes = b"", *, http2: bool = False) -> Any:
    return SimpleNamespace(
        sock=sock, is_http2=http2, parser=SimpleNamespace(unreader=SimpleNamespace(buf=io.BytesIO(buffered)))
    )


def test_a_waiting_next_request_is_served_in_the_same_thread(sockets: Any) -> None:
    ours, peer = sockets
    peer.sendall(b"GET / HTTP/1.1\r\n\r\n")
    assert _worker(threads=2, busy=1)._next_request_arrives(_conn(ours))


def test_an_idle_connection_goes_back_to_the_poller(sockets: Any) -> None:
    ours, _ = sockets
    assert not _worker(threads=2, busy=1)._next_request_arrives(_conn(ours))


def test_pipelined_bytes_already_read_are_served_without_waiting(sockets: Any) -> None:
    ours, _ = sockets  # nothing on the socket: the next request is in the parser's buffer
    assert _worker(threads=1, busy=1)._next_request_arrives(_conn(ours, b"GET / HTTP/1.1\r\n"))


@pytest.mark.parametrize(
    ("worker", "http2"),
    [
        pytest.param(_worker(threads=2, busy=2), False, id="no other thread free"),
        pytest.param(_worker(threads=8, busy=1, alive=False), False, id="shutting down"),
        pytest.param(_worker(threads=8, busy=1), True, id="http2 has its own loop"),
    ],
)
def test_it_does_not_wait_when_it_must_not(worker: Any, http2: bool, sockets: Any) -> None:
    ours, peer = sockets
    peer.sendall(b"GET / HTTP/1.1\r\n\r\n")
    assert not worker._next_request_arrives(_conn(ours, http2=http2))


# --------------------------------------------------------------------------- under a real gunicorn

HEALTH = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def _read_responses(sock: socket.socket, count: int) -> list[bytes]:
    """``count`` complete responses of /healthz (Content-Length framed) from one connection."""
    data = b""
    responses: list[bytes] = []
    while len(responses) < count:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            if len(rest) >= length:
                responses.append(head + sep + rest[:length])
                data = rest[length:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection after {len(responses)} of {count} responses"
        data += chunk
    return responses


@pytest.fixture(scope="module")
def two_threads() -> Iterator[LiveServer]:
    with live_server(threads=2) as server:
        yield server


def _connect(server: LiveServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def test_gunicorn_runs_this_worker(two_threads: LiveServer) -> None:
    assert "Using worker: aerostack.worker.ThreadWorker" in two_threads.log_text()


def test_pipelined_requests_are_all_answered(two_threads: LiveServer) -> None:
    with _connect(two_threads) as sock:
        sock.sendall(HEALTH * 3)
        responses = _read_responses(sock, 3)
    assert all(r.startswith(b"HTTP/1.1 200 ") and r.endswith(b"ok") for r in responses)


def test_back_to_back_requests_on_one_connection(two_threads: LiveServer) -> None:
    with _connect(two_threads) as sock:
        for _ in range(50):
            sock.sendall(HEALTH)
            assert _read_responses(sock, 1)[0].startswith(b"HTTP/1.1 200 ")


def test_more_busy_connections_than_threads_are_all_served(two_threads: LiveServer) -> None:
    """Six clients hammer two threads: a thread serving one client's requests never shuts the others out."""
    served = [0] * 6
    errors: list[BaseException] = []

    def client(index: int) -> None:
        try:
            with _connect(two_threads) as sock:
                for _ in range(40):
                    sock.sendall(HEALTH)
                    assert _read_responses(sock, 1)[0].startswith(b"HTTP/1.1 200 ")
                    served[index] += 1
        except BaseException as exc:  # reported below, with the counts
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, (errors, served)
    assert served == [40] * 6


def test_an_idle_kept_alive_connection_does_not_hold_a_thread() -> None:
    """With one thread, a client that keeps its connection open but sends nothing must not block others."""
    with live_server(threads=1) as server, _connect(server) as idle:
        idle.sendall(HEALTH)
        _read_responses(idle, 1)
        for _ in range(5):
            with _connect(server) as other:
                other.sendall(HEALTH)
                assert _read_responses(other, 1)[0].startswith(b"HTTP/1.1 200 ")


def test_shutdown_with_kept_alive_connections_ends_cleanly() -> None:
    with live_server(threads=2) as server:
        sock = _connect(server)
        sock.sendall(HEALTH)
        _read_responses(sock, 1)
        process = server.processes[0]
        process.terminate()
        process.wait(timeout=30)  # graceful: gthread lets kept-alive connections linger for 2 s at most
        sock.close()
        assert process.returncode == 0, server.log_text()[-2000:]
