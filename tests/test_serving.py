"""The serving model (aerostack/serving.py, aerostack/asgi.py): connections in the event loop, Django in lanes.

The pure parts (the WSGI environ, a lane's bound) are tested directly; the model itself on a real gunicorn
started on 127.0.0.1 (tests/live.py) with a slow upstream (benchmarks/slow_upstream.py). Speed targets are
measured by ``make stress``; here only functional bounds, with generous timeouts.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from aerostack.serving import Front, Lane, LastIdleFirstExecutor, wsgi_environ
from benchmarks.gateway import gunicorn_worker_pid
from benchmarks.stress import (
    STREAM_TOOL,
    STRESS_ENV,
    WAIT_TOOL,
    Connections,
    Setup,
    SlowCalls,
    SlowUpstream,
    process_status,
    provision,
    session_client,
    slow_upstream,
    tool_call,
)
from tests.live import live_server

GATEWAY_THREADS = 24
WAIT_SECONDS = 6.0


# --------------------------------------------------------------------------- the pure parts


def _scope(**overrides: object) -> dict[str, object]:
    scope: dict[str, object] = {
        "type": "http",
        "method": "POST",
        "path": "/ws/team",
        "query_string": b"a=1",
        "headers": [(b"content-type", b"application/json"), (b"x-two", b"a"), (b"x-two", b"b")],
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 5555),
        "scheme": "http",
        "http_version": "1.1",
    }
    scope.update(overrides)
    return scope


def test_it_builds_the_wsgi_environ_of_a_request() -> None:
    environ = wsgi_environ(_scope(), b"{}")
    assert environ["REQUEST_METHOD"] == "POST"
    assert environ["PATH_INFO"] == "/ws/team"
    assert environ["QUERY_STRING"] == "a=1"
    assert environ["CONTENT_TYPE"] == "application/json"
    assert environ["CONTENT_LENGTH"] == "2"
    assert environ["HTTP_X_TWO"] == "a,b"
    assert environ["REMOTE_ADDR"] == "127.0.0.1"
    assert environ["wsgi.input"].read() == b"{}"


def test_a_chunked_body_gets_the_length_that_was_read() -> None:
    assert wsgi_environ(_scope(), b"12345")["CONTENT_LENGTH"] == "5"


def test_a_declared_length_beyond_what_was_read_stays_visible() -> None:
    """The body was cut at the lane's limit: the application must see the declared length to answer 413."""
    scope = _scope(headers=[(b"content-length", b"999999")])
    assert wsgi_environ(scope, b"x" * 10)["CONTENT_LENGTH"] == "999999"


def test_a_path_outside_latin_1_survives_the_round_trip() -> None:
    environ = wsgi_environ(_scope(path="/workspaces/caf\u00e9/"), b"")
    assert environ["PATH_INFO"].encode("latin-1").decode("utf-8") == "/workspaces/caf\u00e9/"


def test_a_lane_admits_threads_plus_queue_and_no_more() -> None:
    lane = Lane(name="test", threads=2, queue=1, max_body=10, busy=lambda body: (503, [], b""))
    try:
        assert [lane.admit() for _ in range(4)] == [True, True, True, False]
        assert lane.refused == 1
        lane.release()
        assert lane.admit()
    finally:
        lane.shutdown()


def test_sequential_tasks_stay_on_the_thread_that_was_idle_last() -> None:
    executor = LastIdleFirstExecutor(8, "test")
    try:
        gate = threading.Event()
        started = [executor.submit(gate.wait, 10) for _ in range(3)]  # three threads...
        gate.set()
        for future in started:
            future.result(timeout=10)
        names = set()
        for _ in range(50):
            deadline = time.monotonic() + 10
            while executor.idle_threads < 3 and time.monotonic() < deadline:
                time.sleep(0.001)  # ...all back to idle before each task
            names.add(executor.submit(lambda: threading.current_thread().name).result(timeout=10))
        assert len(names) == 1  # always the one that became idle last, never the other two
    finally:
        executor.shutdown()


def test_the_executor_starts_at_most_its_bound_of_threads_and_queues_the_rest() -> None:
    executor = LastIdleFirstExecutor(3, "test")
    gate = threading.Event()
    try:
        futures = [
            executor.submit(lambda: (gate.wait(10), threading.current_thread().name)[1]) for _ in range(6)
        ]
        time.sleep(0.2)
        assert sum(future.running() for future in futures) == 3  # the other three wait in order
        gate.set()
        assert len({future.result(timeout=10) for future in futures}) == 3
    finally:
        executor.shutdown()
    with pytest.raises(RuntimeError):
        executor.submit(lambda: None)


def _echo_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def _through_front(front: Front, chunks: list[bytes]) -> list[dict[str, Any]]:
    """One request whose body arrives in ``chunks``, through ``front``; the ASGI messages it sent."""

    async def main() -> list[dict[str, Any]]:
        incoming = [
            {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
            for index, chunk in enumerate(chunks)
        ]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            if incoming:
                return incoming.pop(0)
            await asyncio.sleep(60)  # the client neither sends nor leaves: the test would time out
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await front(_scope(headers=[]), receive, send)
        return sent

    return asyncio.run(main())


@pytest.fixture
def small_front() -> Iterator[Front]:
    lane = Lane(name="test", threads=2, max_body=1000, busy=lambda body: (503, [], b"busy"))
    yield Front(_echo_app, lambda path: lane, [lane], body_budget=100)
    lane.shutdown()


def test_the_front_runs_the_app_on_the_whole_body(small_front: Front) -> None:
    start, body = _through_front(small_front, [b"a" * 25, b"b" * 25])
    assert start["status"] == 200
    assert (b"content-length", b"50") in start["headers"]
    assert body["body"] == b"a" * 25 + b"b" * 25
    assert small_front.buffered == 0


def test_a_body_beyond_the_memory_budget_gets_the_busy_answer(small_front: Front) -> None:
    start, body = _through_front(small_front, [b"x" * 50, b"x" * 50, b"x" * 50])
    assert start["status"] == 503
    assert (b"connection", b"close") in start["headers"]  # the rest of the body is never read
    assert body["body"] == b"busy"
    assert small_front.buffered == 0  # given back


# --------------------------------------------------------------------------- on a real server


@dataclass
class Served:
    setup: Setup
    upstream: SlowUpstream
    worker_pid: int | None


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    env = {**STRESS_ENV, "SERVER_GATEWAY_THREADS": str(GATEWAY_THREADS), "SERVER_DASHBOARD_THREADS": "2"}
    with live_server(extra_env=env) as server, slow_upstream(server.data_dir) as upstream:
        setup = provision(server, upstream.url)
        yield Served(setup, upstream, gunicorn_worker_pid(server.processes[0].pid))


def _ping(setup: Setup) -> dict[str, object]:
    client = session_client(setup.ping_url, setup.ping_token, timeout=20)
    try:
        return client.request("ping")[1]
    finally:
        client.close()


def _dashboard_status(setup: Setup) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", setup.server.port, timeout=20)
    try:
        connection.request("GET", setup.dashboard_path, headers={"Cookie": setup.cookie})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_it_answers_a_ping_and_a_dashboard_page_while_20_calls_are_in_flight(served: Served) -> None:
    calls = SlowCalls(served.setup, 20, WAIT_SECONDS).start()
    try:
        assert served.upstream.wait_in_flight(20, timeout=30) == 20
        assert _ping(served.setup)["result"] == {}
        assert _dashboard_status(served.setup) == 200
        assert served.upstream.stats()["in_flight"] == 20  # answered while the slow calls were still waiting
    finally:
        calls.join(WAIT_SECONDS + 60)
    summary = calls.summary()
    assert summary["ok"] == 20, summary


def test_a_request_beyond_the_gateway_bound_gets_a_json_rpc_error_at_once(served: Served) -> None:
    extra = SlowCalls(served.setup, 1, WAIT_SECONDS).clients[0]  # its session exists before the lane is full
    calls = SlowCalls(served.setup, GATEWAY_THREADS, WAIT_SECONDS).start()
    try:
        assert served.upstream.wait_in_flight(GATEWAY_THREADS, timeout=30) == GATEWAY_THREADS
        outcome = tool_call(extra, WAIT_TOOL, {"seconds": WAIT_SECONDS})
        extra.close()
        assert outcome.status == 503
        assert outcome.error.startswith("-32000: Gateway busy")
        assert outcome.seconds < WAIT_SECONDS  # refused at once, not queued behind the slow calls
        assert _dashboard_status(served.setup) == 200  # the dashboard has a lane of its own
    finally:
        calls.join(WAIT_SECONDS + 60)
    assert calls.summary()["ok"] == GATEWAY_THREADS
    assert _ping(served.setup)["result"] == {}  # the lane admits again once the calls are done


def test_the_busy_answer_carries_the_request_id(served: Served) -> None:
    calls = SlowCalls(served.setup, GATEWAY_THREADS, WAIT_SECONDS).start()
    try:
        assert served.upstream.wait_in_flight(GATEWAY_THREADS, timeout=30) == GATEWAY_THREADS
        connection = http.client.HTTPConnection("127.0.0.1", served.setup.server.port, timeout=20)
        body = json.dumps({"jsonrpc": "2.0", "id": "abc-7", "method": "ping"})
        path = served.setup.ping_url.removeprefix(served.setup.server.url)
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        reply = json.loads(response.read())
        connection.close()
        assert response.status == 503
        assert response.getheader("Retry-After") == "1"
        assert reply["id"] == "abc-7"
        assert reply["error"]["code"] == -32000
    finally:
        calls.join(WAIT_SECONDS + 60)


def test_idle_and_slow_header_connections_hold_no_thread(served: Served) -> None:
    before = process_status(served.worker_pid)["threads"]
    crowd = Connections(served.setup.server.port)
    try:
        crowd.open_idle(100)
        crowd.open_slowloris(100, served.setup.slow_url.removeprefix(served.setup.server.url))
        assert _ping(served.setup)["result"] == {}
        assert _dashboard_status(served.setup) == 200
        assert crowd.still_open() == 200  # held by the server, not dropped
        # 200 open connections, and no thread was started for them (the lanes reuse their threads).
        assert process_status(served.worker_pid)["threads"] <= before + 2
    finally:
        crowd.close()


def test_it_relays_an_sse_stream_with_progress(served: Served) -> None:
    client = session_client(served.setup.slow_url, served.setup.slow_token, timeout=20)
    client.headers["Accept"] = "text/event-stream"
    message = {
        "jsonrpc": "2.0",
        "id": 41,
        "method": "tools/call",
        "params": {
            "name": STREAM_TOOL,
            "arguments": {"seconds": 1.5, "steps": 3},
            "_meta": {"progressToken": "mine"},
        },
    }
    try:
        status, response, raw = client._post(message)
    finally:
        client.close()
    assert status == 200
    assert response.getheader("Content-Type", "").startswith("text/event-stream")
    events = [
        json.loads(line[5:])
        for line in raw.decode().replace("\r\n", "\n").split("\n")
        if line.startswith("data:")
    ]
    progress = [event for event in events if event.get("method") == "notifications/progress"]
    assert [event["params"]["progress"] for event in progress] == [1, 2, 3]
    assert {event["params"]["progressToken"] for event in progress} == {"mine"}
    assert events[-1]["id"] == 41
    assert events[-1]["result"]["content"][0]["text"] == "streamed"


def test_a_client_that_closes_a_stream_ends_the_upstream_reply(served: Served) -> None:
    """Closing the SSE stream stops the relay, and the gateway closes its upstream reply (cancellation)."""
    client = session_client(served.setup.slow_url, served.setup.slow_token, timeout=20)
    client.close()
    aborted = served.upstream.stats()["aborted"]
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 42,
            "method": "tools/call",
            "params": {
                "name": STREAM_TOOL,
                "arguments": {"seconds": 30, "steps": 60},
                "_meta": {"progressToken": "p"},
            },
        }
    ).encode()
    path = served.setup.slow_url.removeprefix(served.setup.server.url)
    headers = {**client.headers, "Accept": "text/event-stream", "Content-Length": str(len(body))}
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    with socket.create_connection(("127.0.0.1", served.setup.server.port), timeout=20) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        data = b""
        while b"notifications/progress" not in data:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
    deadline = time.monotonic() + 20  # far less than the 30 s the stream would last
    while served.upstream.stats()["aborted"] == aborted and time.monotonic() < deadline:
        time.sleep(0.2)
    assert served.upstream.stats()["aborted"] == aborted + 1
    assert _ping(served.setup)["result"] == {}


def test_a_chunked_request_body_is_read(served: Served) -> None:
    client = session_client(served.setup.ping_url, served.setup.ping_token, timeout=20)
    client.close()
    body = json.dumps({"jsonrpc": "2.0", "id": 5, "method": "ping"}).encode()
    with socket.create_connection(("127.0.0.1", served.setup.server.port), timeout=20) as sock:
        path = served.setup.ping_url.removeprefix(served.setup.server.url)
        head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Transfer-Encoding: chunked", "Connection: close"]
        head += [f"{name}: {value}" for name, value in client.headers.items()]
        sock.sendall(
            ("\r\n".join(head) + "\r\n\r\n").encode()
            + f"{len(body):x}\r\n".encode()
            + body
            + b"\r\n0\r\n\r\n"
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 "), data[:300]
    assert json.loads(data.split(b"\r\n\r\n", 1)[1]) == {"jsonrpc": "2.0", "id": 5, "result": {}}


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_gateway_limit_gets_413(served: Served, chunked: bool) -> None:
    """The loop reads at most the lane's limit (+1 byte); the view answers 413 with a JSON-RPC error."""
    path = served.setup.ping_url.removeprefix(served.setup.server.url)
    body = b"x" * (1024 * 1024 + 100_000)  # GATEWAY_MAX_BODY_BYTES is 1 MiB by default
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
    payload = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n" if chunked else body
    with socket.create_connection(("127.0.0.1", served.setup.server.port), timeout=20) as sock:
        sock.sendall(head.encode() + payload)
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
    assert data.startswith(b"HTTP/1.1 413 "), data[:300]
    assert json.loads(data.split(b"\r\n\r\n", 1)[1])["error"]["code"] == -32600


def test_a_websocket_upgrade_is_refused(served: Served) -> None:
    request = (
        b"GET /ws/x HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", served.setup.server.port), timeout=20) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
    # No WebSocket endpoint: served as a plain GET of the gateway, which wants a token first (never 101).
    assert data.startswith(b"HTTP/1.1 401 "), data[:300]
