"""What gateway.upstream writes for a POST: the bytes http.client's request() writes, in one write."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.upstream import ONE_WRITE_MAX_BODY, UpstreamConfig, UpstreamSession, _Connection, _TLSConnection


class _Recording:
    """A socket that records each write (no network)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        pass


def _written(connection: Any, send: Any) -> list[bytes]:
    connection.sock = _Recording()
    send(connection)
    writes: list[bytes] = connection.sock.writes
    return writes


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://127.0.0.1:9000/mcp", _Connection),
        ("http://upstream.example/mcp?x=1", _Connection),
        ("https://upstream.example/mcp", _TLSConnection),
        ("https://upstream.example:8443/mcp", _TLSConnection),
        ("http://[::1]:9000/mcp", _Connection),
    ],
)
@pytest.mark.parametrize("session_id", [None, "abc-123"])
def test_a_prepared_post_is_byte_for_byte_http_clients_request_in_one_write(
    url: str, kind: type, session_id: str | None
) -> None:
    config = UpstreamConfig(
        server_id=1, slug="up", url=url, timeout=5, headers={"Authorization": "Bearer s3cret", "X-Team": "ä"}
    )
    session = UpstreamSession(config)
    session.protocol_version = "2025-11-25"
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/call"}'
    headers = session._headers(session_id)
    lines = session._prepared_lines(session_id, initialize=False)
    assert session._prepared_lines(session_id, initialize=False) is lines  # prepared once

    def plain(connection: Any) -> None:
        connection.request("POST", session._path, body=body, headers=headers)

    def prepared(connection: Any) -> None:
        connection.post_prepared(session._path, lines, body)

    expected = _written(kind.__mro__[2](session._host, session._port), plain)  # http.client's own class
    written = _written(kind(session._host, session._port), prepared)
    assert written == [b"".join(expected)] and len(expected) == 2


def test_a_large_body_goes_out_as_http_client_sends_it() -> None:
    body = b"x" * (ONE_WRITE_MAX_BODY + 1)
    written = _written(
        _Connection("127.0.0.1", 9000),
        lambda c: c.post_prepared("/mcp", ([b"Host: 127.0.0.1:9000"], []), body),
    )
    assert len(written) == 2 and written[1] == body


def test_a_header_value_http_client_refuses_is_refused_when_prepared() -> None:
    session = UpstreamSession(
        UpstreamConfig(
            server_id=1, slug="up", url="http://127.0.0.1:9000/mcp", headers={"X-Bad": "a\r\nb: c"}
        )
    )
    with pytest.raises(ValueError, match="Invalid header value"):
        session._prepared_lines(None, initialize=False)
