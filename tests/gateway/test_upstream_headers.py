"""gateway.upstream reads an upstream reply's headers without the email package's parser (``_Headers``,
``_Response``): the same headers, status, length and keep-alive decision as http.client's own."""

from __future__ import annotations

import http.client
import io
import socket
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.upstream import _Connection, _Headers, _Response


def _stdlib(lines: list[bytes]) -> http.client.HTTPMessage:
    return http.client.parse_headers(io.BytesIO(b"".join(lines)))


def _same(lines: list[bytes]) -> None:
    expected = _stdlib(lines)
    parsed = _Headers.parse(list(lines))
    assert parsed.items() == expected.items()
    for name in {key for key, _ in expected.items()} | {"content-length", "absent", "MCP-SESSION-ID"}:
        for spelled in (name, name.lower(), name.upper()):
            assert parsed.get(spelled) == expected.get(spelled)
            assert parsed.get_all(spelled) == expected.get_all(spelled)
            assert parsed[spelled] == expected[spelled]
            assert (spelled in parsed) == (spelled in expected)
    assert isinstance(parsed, http.client.HTTPMessage)


@pytest.mark.parametrize(
    "block",
    [
        b"Content-Type: application/json\r\nContent-Length: 42\r\nMcp-Session-Id: abc\r\n\r\n",
        b"content-type:text/event-stream\r\ncache-control: no-cache\r\n\r\n",  # no blank after the colon
        b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nX: \r\n\r\n",  # repeated, empty value
        b"X-Long: first\r\n  folded\r\n\tagain\r\nNext: 1\r\n\r\n",  # obsolete line folding
        b"  leading continuation\r\nA: 1\r\n\r\n",  # a continuation before any header
        b"A: 1\r\nnot a header line\r\nB: 2\r\n\r\n",  # parsing stops at a line that is no header
        b"A: 1\r\nBad Name: 2\r\nC: 3\r\n\r\n",
        b"A: 1\r\n: nameless\r\n folded\r\nB: 2\r\n\r\n",  # a nameless header is dropped, then it goes on
        b"From somebody\r\nA: 1\r\nFrom x: y\r\nB: 2\r\n\r\n",  # envelope lines
        b"X-Latin: caf\xe9\r\nX-Trail: value  \r\n\r\n",  # latin-1 bytes, trailing blanks kept
        b"A: 1\nB: 2\n\n",  # bare LF line ends
        b"A: x\ry\r\nB: 2\r\n\r\n",  # a lone CR ends a line for the email parser
        b"A: 1\r\r\nB: 2\r\n\r\n",
        b"\r\n",  # no headers at all
    ],
)
def test_headers_parse_as_http_client_parses_them(block: bytes) -> None:
    _same(http.client._read_headers(io.BytesIO(block + b"body")))  # type: ignore[attr-defined]


_piece = st.sampled_from([*"Aa-_:; \t\xe9x\r", "From ", ": ", "Content-Length", "\x7f"])
_text = st.lists(_piece, max_size=10).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(_text, max_size=8))
def test_any_header_block_parses_as_http_client_parses_it(lines: list[str]) -> None:
    raw = [line.encode("iso-8859-1") + b"\r\n" for line in lines if line.strip(" \t") or line == ""]
    raw = [line for line in raw if line != b"\r\n"] + [b"\r\n"]
    _same(raw)


def test_a_changed_message_still_answers_like_http_message() -> None:
    parsed = _Headers.parse([b"A: 1\r\n", b"\r\n"])
    parsed["B"] = "2"
    del parsed["A"]
    assert parsed.get("b") == "2" and parsed.get("a") is None and "B" in parsed


class _OneReply:
    """A loopback server that answers one request with ``reply`` (raw bytes), then ends its side."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        with connection:
            data = b""
            while b"\r\n\r\n" not in data:
                data += connection.recv(65536)
            connection.sendall(self.reply)
            connection.shutdown(socket.SHUT_WR)  # a reply without a length ends here
            connection.recv(65536)  # until the client closes

    def close(self) -> None:
        self.listener.close()
        self.thread.join(timeout=5)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", (200, "OK", 11, 2, False, False, b"ok")),
        (
            b"HTTP/1.1 100 Continue\r\nX: 1\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n",
            (202, "Accepted", 11, 0, False, False, b""),
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            (200, "OK", 11, None, True, False, b"ok"),
        ),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nok", (200, "OK", 11, None, False, True, b"ok")),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", (200, "OK", 10, 2, False, True, b"ok")),
        (
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
            (200, "OK", 10, 2, False, False, b"ok"),
        ),
        (b"HTTP/1.1 204 No Content\r\n\r\n", (204, "No Content", 11, 0, False, False, b"")),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\nok", (200, "OK", 11, None, False, True, b"ok")),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\nok", (200, "OK", 11, None, False, True, b"ok")),
    ],
)
def test_a_reply_reads_as_http_clients_own_response_reads_it(
    reply: bytes, expected: tuple[object, ...]
) -> None:
    seen = []
    for connection_class in (http.client.HTTPConnection, _Connection):
        server = _OneReply(reply)
        connection = connection_class("127.0.0.1", server.port, timeout=5)
        try:
            connection.request("POST", "/mcp", body=b"{}")
            response = connection.getresponse()
            assert isinstance(response, _Response) == (connection_class is _Connection)
            head = (response.status, response.reason, response.version, response.length)
            state = (response.chunked, response.will_close)
            seen.append((*head, *state, response.read(), response.getheaders()))
        finally:
            connection.close()
            server.close()
    assert seen[0] == seen[1]
    assert seen[1][:7] == expected


def test_too_many_header_lines_are_refused_as_http_client_refuses_them() -> None:
    server = _OneReply(b"HTTP/1.1 200 OK\r\n" + b"X: 1\r\n" * 101 + b"\r\n")
    connection = _Connection("127.0.0.1", server.port, timeout=5)
    try:
        connection.request("POST", "/mcp", body=b"{}")
        with pytest.raises(http.client.HTTPException, match="more than 100 headers"):
            connection.getresponse()
    finally:
        connection.close()
        server.close()
