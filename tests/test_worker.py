"""aerostack.worker.Worker: uvicorn's event loop under gunicorn, serving aerostack.asgi:application.

Tested as a whole under a real gunicorn: pipelined and back-to-back requests, more busy connections than the
dashboard lane has threads, an idle connection beside a one-thread lane, shutdown with kept-alive connections,
no control socket in $HOME, and X-Forwarded-For not trusted by the server itself. (ThreadWorker, the gthread
variant this replaced, is gone with its tests: see docs/architecture.md.)
"""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aerostack.worker import _raise_descriptor_limit
from tests.live import LiveServer, live_server


def test_it_raises_the_soft_descriptor_limit_but_never_above_the_hard_one() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        _raise_descriptor_limit(soft - 1)  # never lowers it
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)
        _raise_descriptor_limit(10**9)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


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
    with (
        tempfile.TemporaryDirectory(prefix="aerostack-home-") as home,
        live_server(
            extra_env={
                "SERVER_DASHBOARD_THREADS": "2",
                "SERVER_HEADER_TIMEOUT_SECONDS": "2",
                "HOME": home,
                "XDG_RUNTIME_DIR": home,
            }
        ) as server,
    ):
        server.home = Path(home)  # type: ignore[attr-defined]
        yield server


def _connect(server: LiveServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def test_gunicorn_runs_this_worker(two_threads: LiveServer) -> None:
    # The port listens before gunicorn's later start-up lines reach the log file (seen on a loaded machine).
    deadline = time.monotonic() + 15
    while "Using worker:" not in two_threads.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "Using worker: aerostack.worker.Worker" in two_threads.log_text()


def test_it_opens_no_control_socket(two_threads: LiveServer) -> None:
    """Two instances on one machine would take a fixed control socket path in $HOME from each other."""
    home: Path = two_threads.home  # type: ignore[attr-defined]
    assert not [path for path in home.rglob("*") if path.is_socket()]


def test_it_does_not_rewrite_the_client_address_from_x_forwarded_for(two_threads: LiveServer) -> None:
    """uvicorn would, for any peer in forwarded_allow_ips (127.0.0.1 by default); Aerostack resolves the client
    itself (aerostack/net.py, TRUSTED_PROXIES). The access log shows the address the server took."""
    with _connect(two_threads) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n")
        assert _read_responses(sock, 1)[0].startswith(b"HTTP/1.1 200 ")
    log = two_threads.log_text()
    assert "GET /healthz" in log
    assert "203.0.113.9" not in log


def test_a_request_whose_headers_never_end_is_cut_off(two_threads: LiveServer) -> None:
    """Slowloris: headers trickled one line at a time. The connection holds no thread, but it must not keep its
    slot for ever: SERVER_HEADER_TIMEOUT_SECONDS (2 s here) after the request's first byte it is closed."""
    closed = False
    with _connect(two_threads) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        sock.settimeout(0.3)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not closed:
            try:
                sock.sendall(b"X-Trickle: a\r\n")
                closed = sock.recv(1) == b""
            except TimeoutError:
                continue
            except OSError:  # reset by the server
                closed = True
    assert closed


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
    """With a one-thread lane, a client that keeps its connection open but sends nothing must not block others."""
    with live_server(extra_env={"SERVER_DASHBOARD_THREADS": "1"}) as server, _connect(server) as idle:
        idle.sendall(HEALTH)
        _read_responses(idle, 1)
        for _ in range(5):
            with _connect(server) as other:
                other.sendall(HEALTH)
                assert _read_responses(other, 1)[0].startswith(b"HTTP/1.1 200 ")


def test_shutdown_with_kept_alive_connections_ends_cleanly() -> None:
    with live_server() as server:
        sock = _connect(server)
        sock.sendall(HEALTH)
        _read_responses(sock, 1)
        process = server.processes[0]
        process.terminate()
        process.wait(timeout=30)  # graceful: idle kept-alive connections are closed at once
        sock.close()
        assert process.returncode == 0, server.log_text()[-2000:]
