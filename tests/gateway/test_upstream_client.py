"""gateway.upstream against real upstreams: pooling, re-initialization, JSON and SSE replies, failures."""

from __future__ import annotations

import http.client
import socket
import threading
from typing import Any
from urllib.parse import urlsplit

import pytest

from gateway.upstream import UpstreamConfig, UpstreamError, UpstreamSession, probe
from tests.live import free_port


def _end_upstream_session(url: str, session_id: str) -> None:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    connection.request(
        "DELETE", parts.path, headers={"Mcp-Session-Id": session_id, "MCP-Protocol-Version": "2025-11-25"}
    )
    assert connection.getresponse().status in (200, 204)
    connection.close()


@pytest.mark.parametrize("which", ["py_upstream", "everything_upstream"])
def test_it_reinitializes_after_the_upstream_ended_its_session(
    which: str, request: pytest.FixtureRequest, settings: Any
) -> None:
    # server-everything answers 400 "No valid session ID provided" where the spec says 404: both must work.
    settings.ALLOW_PRIVATE_UPSTREAMS = True
    upstream = request.getfixturevalue(which)
    session = UpstreamSession(UpstreamConfig(server_id=1, slug="up", url=upstream.url, timeout=10))
    try:
        tools = session.list_tools()
        assert tools and all("name" in tool for tool in tools)
        first = session.session_id
        assert first
        _end_upstream_session(upstream.url, first)
        assert session.list_tools() == tools
        assert session.session_id and session.session_id != first
    finally:
        session.end()


def test_it_reuses_keep_alive_connections(py_upstream: Any, settings: Any) -> None:
    settings.ALLOW_PRIVATE_UPSTREAMS = True
    session = UpstreamSession(UpstreamConfig(server_id=1, slug="py", url=py_upstream.url, timeout=10))
    try:
        for n in range(5):
            assert session.request("tools/call", {"name": "add", "arguments": {"a": n, "b": 1}})["content"][
                0
            ]["text"] == str(n + 1)
        assert len(session._pool) == 1
    finally:
        session.end()


def test_it_is_safe_to_share_between_threads(py_upstream: Any, settings: Any) -> None:
    settings.ALLOW_PRIVATE_UPSTREAMS = True
    session = UpstreamSession(UpstreamConfig(server_id=1, slug="py", url=py_upstream.url, timeout=10))
    results: list[str] = []

    def work(n: int) -> None:
        for i in range(5):
            reply = session.request("tools/call", {"name": "add", "arguments": {"a": n, "b": i}})
            results.append("ok" if reply["content"][0]["text"] == str(n + i) else "wrong")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert results == ["ok"] * 40
    finally:
        session.end()


def test_it_reports_a_refused_connection(settings: Any) -> None:
    settings.ALLOW_PRIVATE_UPSTREAMS = True
    with pytest.raises(UpstreamError) as info:
        probe(UpstreamConfig(server_id=1, slug="gone", url=f"http://127.0.0.1:{free_port()}/mcp", timeout=5))
    assert info.value.kind == "unreachable" and "cannot connect" in info.value.message


def _serve_once(reply: bytes) -> tuple[str, threading.Thread]:
    """A loopback socket that answers one HTTP request with ``reply`` (a broken upstream)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def serve() -> None:
        connection, _ = listener.accept()
        connection.recv(65536)
        connection.sendall(reply)
        connection.close()
        listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{port}/mcp", thread


@pytest.mark.parametrize(
    ("reply", "kind", "text"),
    [
        (b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops", "http", "HTTP 500"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\nnot json!",
            "protocol",
            "not JSON",
        ),
        (b"garbage that is not http\r\n\r\n", "unreachable", "slug"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1\r\n\r\n5",
            "protocol",
            "not an object",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 3\r\n\r\nNaN",
            "protocol",
            "not JSON",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: [1]\n\n",
            "protocol",
            "not an object",
        ),
        (b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 20\r\n\r\nbad key sk-12345678!", "http", "HTTP 401"),
        (b"", "unreachable", "closed"),
    ],
)
def test_it_turns_broken_upstreams_into_clean_errors(
    reply: bytes, kind: str, text: str, settings: Any
) -> None:
    settings.ALLOW_PRIVATE_UPSTREAMS = True
    url, thread = _serve_once(reply)
    with pytest.raises(UpstreamError) as info:
        probe(UpstreamConfig(server_id=1, slug="slug", url=url, timeout=5))
    thread.join(timeout=5)
    assert info.value.kind == kind and text in info.value.message, info.value.message


def test_it_refuses_private_addresses_unless_allowed(settings: Any) -> None:
    settings.ALLOW_PRIVATE_UPSTREAMS = False
    with pytest.raises(UpstreamError, match="private, loopback or link-local"):
        probe(UpstreamConfig(server_id=1, slug="x", url="http://127.0.0.1:9/mcp", timeout=5))


@pytest.mark.parametrize(
    "flags", [("--json-response",), ("--stateless",), ("--stateless", "--json-response")]
)
def test_it_speaks_to_json_and_stateless_upstreams(flags: tuple[str, ...], settings: Any) -> None:
    from tests.e2e.upstreams import start_python_upstream

    settings.ALLOW_PRIVATE_UPSTREAMS = True
    upstream = start_python_upstream(*flags)
    session = UpstreamSession(UpstreamConfig(server_id=1, slug="py", url=upstream.url, timeout=10))
    try:
        assert (
            session.request("tools/call", {"name": "add", "arguments": {"a": 2, "b": 2}})["content"][0][
                "text"
            ]
            == "4"
        )
        assert (session.session_id is None) == ("--stateless" in flags)
        notes = [
            m
            for m in session.stream("tools/call", {"name": "slow", "arguments": {"seconds": 0.1}})
            if "method" in m
        ]
        assert bool(notes) == ("--json-response" not in flags)  # JSON replies carry the result alone
    finally:
        session.end()
        upstream.stop()


def test_it_reports_slow_calls_only(settings: Any) -> None:
    """on_slow (which registers a call for cancellation) fires for slow or streamed replies, not fast ones."""
    from tests.e2e.upstreams import start_python_upstream

    settings.ALLOW_PRIVATE_UPSTREAMS = True
    upstream = start_python_upstream("--json-response")
    session = UpstreamSession(UpstreamConfig(server_id=1, slug="py", url=upstream.url, timeout=10))
    calls: list[str] = []
    try:
        list(
            session.stream(
                "tools/call",
                {"name": "add", "arguments": {"a": 1, "b": 1}},
                on_slow=lambda: calls.append("fast"),
            )
        )
        list(
            session.stream(
                "tools/call",
                {"name": "slow", "arguments": {"seconds": 0.3}},
                on_slow=lambda: calls.append("slow"),
            )
        )
        assert calls == ["slow"]
    finally:
        session.end()
        upstream.stop()


def test_it_reports_streamed_replies_as_slow(py_upstream: Any, settings: Any) -> None:
    settings.ALLOW_PRIVATE_UPSTREAMS = True
    session = UpstreamSession(UpstreamConfig(server_id=1, slug="py", url=py_upstream.url, timeout=10))
    calls: list[str] = []
    try:
        list(
            session.stream(
                "tools/call",
                {"name": "add", "arguments": {"a": 1, "b": 1}},
                on_slow=lambda: calls.append("sse"),
            )
        )
        assert calls == ["sse"]
    finally:
        session.end()


def test_it_keeps_upstream_error_bodies_out_of_the_message(settings: Any) -> None:
    settings.ALLOW_PRIVATE_UPSTREAMS = True
    url, thread = _serve_once(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 20\r\n\r\nbad key sk-12345678!")
    with pytest.raises(UpstreamError) as info:
        probe(UpstreamConfig(server_id=1, slug="slug", url=url, timeout=5))
    thread.join(timeout=5)
    assert "sk-12345678" not in info.value.message  # an upstream may echo what it was sent
