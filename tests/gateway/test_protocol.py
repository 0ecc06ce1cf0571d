"""Unit tests for gateway.protocol: pure functions, no Django, no database, no network."""

from __future__ import annotations

import hashlib
import json
import random

import pytest

from gateway import protocol
from gateway.protocol import (
    DEFAULT_HEADER_VERSION,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    LATEST_PROTOCOL_VERSION,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    SEPARATOR,
    SERVER_ERROR,
    SUPPORTED_PROTOCOL_VERSIONS,
    TOOL_NAME_PATTERN,
    ExposedTool,
    Message,
    ProtocolError,
    SSEEvent,
    SSEParser,
    accepts_sse,
    build_tool_names,
    check_list_cursor,
    check_protocol_version_header,
    encode_sse_event,
    error_body,
    is_discover_probe,
    negotiate_initialize_version,
    parse_message,
    response_mode,
    result_body,
    tool_reverse_map,
)


def _body(obj: object) -> bytes:
    return json.dumps(obj).encode("utf-8")


def _refusal(body: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_message(body)
    return info.value


# --------------------------------------------------------------------------------------------
# Constants and ProtocolError
# --------------------------------------------------------------------------------------------


def test_it_declares_versions_newest_first() -> None:
    assert SUPPORTED_PROTOCOL_VERSIONS == ("2025-11-25", "2025-06-18", "2025-03-26")
    assert sorted(SUPPORTED_PROTOCOL_VERSIONS, reverse=True) == list(SUPPORTED_PROTOCOL_VERSIONS)
    assert SUPPORTED_PROTOCOL_VERSIONS[0] == LATEST_PROTOCOL_VERSION
    assert DEFAULT_HEADER_VERSION == "2025-03-26"


def test_it_declares_jsonrpc_codes() -> None:
    assert (PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR, SERVER_ERROR) == (
        -32700,
        -32600,
        -32601,
        -32602,
        -32603,
        -32000,
    )


def test_it_builds_protocol_error_with_defaults() -> None:
    error = ProtocolError(400, INVALID_REQUEST, "nope")
    assert (error.http_status, error.code, error.message, error.id, error.data) == (
        400,
        INVALID_REQUEST,
        "nope",
        None,
        None,
    )
    assert str(error) == "nope"
    assert isinstance(error, Exception)
    assert error.to_body() == {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "nope"}}


def test_it_serialises_protocol_error_with_id_and_data() -> None:
    error = ProtocolError(200, INVALID_PARAMS, "bad", "req-1", {"field": "x"})
    assert error.to_body() == {
        "jsonrpc": "2.0",
        "id": "req-1",
        "error": {"code": -32602, "message": "bad", "data": {"field": "x"}},
    }
    assert repr(error) == (
        "ProtocolError(http_status=200, code=-32602, message='bad', id='req-1', data={'field': 'x'})"
    )


# --------------------------------------------------------------------------------------------
# parse_message: valid messages
# --------------------------------------------------------------------------------------------


def test_it_parses_a_request_with_params() -> None:
    raw = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "x", "_meta": {"a": 1}}}
    message = parse_message(_body(raw))
    assert message == Message(kind="request", id=7, method="tools/call", params=raw["params"], raw=raw)


def test_it_parses_a_request_with_string_id_and_no_params() -> None:
    message = parse_message(b'{"jsonrpc":"2.0","id":"abc","method":"ping"}')
    assert (message.kind, message.id, message.method, message.params) == ("request", "abc", "ping", None)


@pytest.mark.parametrize("request_id", [0, -1, 2**70, "", "x" * 1000])
def test_it_accepts_edge_case_ids(request_id: object) -> None:
    message = parse_message(_body({"jsonrpc": "2.0", "id": request_id, "method": "ping"}))
    assert message.id == request_id
    assert message.kind == "request"


def test_it_parses_a_notification() -> None:
    message = parse_message(_body({"jsonrpc": "2.0", "method": "notifications/initialized"}))
    assert (message.kind, message.id, message.method, message.params) == (
        "notification",
        None,
        "notifications/initialized",
        None,
    )


def test_it_parses_a_notification_with_params() -> None:
    raw = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 3}}
    message = parse_message(_body(raw))
    assert message.kind == "notification"
    assert message.params == {"requestId": 3}


def test_it_parses_a_result_response() -> None:
    raw = {"jsonrpc": "2.0", "id": "s-1", "result": {"roots": []}}
    message = parse_message(_body(raw))
    assert message == Message(kind="response", id="s-1", method=None, params=None, raw=raw)


def test_it_parses_an_error_response() -> None:
    message = parse_message(_body({"jsonrpc": "2.0", "id": 4, "error": {"code": -1, "message": "no"}}))
    assert (message.kind, message.id) == ("response", 4)


@pytest.mark.parametrize(
    "raw",
    [
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}},
        {"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error", "data": 1}},
    ],
)
def test_it_accepts_error_responses_without_an_id(raw: dict[str, object]) -> None:
    message = parse_message(_body(raw))
    assert (message.kind, message.id) == ("response", None)


def test_it_keeps_unicode_content() -> None:
    message = parse_message('{"jsonrpc":"2.0","id":1,"method":"m","params":{"q":"héllo ツ"}}'.encode())
    assert message.params == {"q": "héllo ツ"}


# --------------------------------------------------------------------------------------------
# parse_message: refusals
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe{}",
        b'{"jsonrpc":"2.0","id":1,"method":"\xc3"}',
        b"",
        b"   ",
        b"{",
        b'{"jsonrpc":"2.0",}',
        b'{"jsonrpc":"2.0","id":1,"method":"m","params":{"x":NaN}}',
        b'{"jsonrpc":"2.0","id":1,"method":"m","params":{"x":-Infinity}}',
        b"\xef\xbb\xbf" + b'{"jsonrpc":"2.0","id":1,"method":"ping"}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    ],
    ids=[
        "bad-utf8",
        "truncated-utf8",
        "empty",
        "blank",
        "truncated-json",
        "trailing-comma",
        "nan",
        "infinity",
        "bom",
        "deep-array",
        "deep-object",
    ],
)
def test_it_refuses_unparsable_bodies_with_parse_error(body: bytes) -> None:
    error = _refusal(body)
    assert (error.http_status, error.code, error.message, error.id) == (400, PARSE_ERROR, "Parse error", None)


@pytest.mark.parametrize("body", [b"[]", b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]'])
def test_it_refuses_batches(body: bytes) -> None:
    error = _refusal(body)
    assert (error.http_status, error.code, error.message, error.id) == (
        400,
        INVALID_REQUEST,
        "Batch requests are not supported",
        None,
    )


@pytest.mark.parametrize("body", [b'"ping"', b"1", b"null", b"true"])
def test_it_refuses_non_objects(body: bytes) -> None:
    error = _refusal(body)
    assert (error.http_status, error.code, error.id) == (400, INVALID_REQUEST, None)
    assert "JSON object" in error.message


@pytest.mark.parametrize(
    "raw",
    [
        {"id": 5, "method": "ping"},
        {"jsonrpc": "1.0", "id": 5, "method": "ping"},
        {"jsonrpc": 2.0, "id": 5, "method": "ping"},
        {"jsonrpc": None, "id": 5, "method": "ping"},
    ],
)
def test_it_refuses_a_wrong_jsonrpc_version_and_keeps_the_id(raw: dict[str, object]) -> None:
    error = _refusal(_body(raw))
    assert (error.http_status, error.code, error.id) == (400, INVALID_REQUEST, 5)
    assert '"jsonrpc"' in error.message


def test_it_refuses_a_wrong_jsonrpc_version_without_a_valid_id() -> None:
    error = _refusal(_body({"jsonrpc": "1.0", "id": True, "method": "ping"}))
    assert (error.code, error.id) == (INVALID_REQUEST, None)


@pytest.mark.parametrize("method", [None, "", 3, ["ping"], {"m": 1}, True])
def test_it_refuses_a_bad_method(method: object) -> None:
    error = _refusal(_body({"jsonrpc": "2.0", "id": "r", "method": method}))
    assert (error.http_status, error.code, error.id) == (400, INVALID_REQUEST, "r")
    assert '"method"' in error.message


@pytest.mark.parametrize("request_id", [None, True, False, 1.5, 1.0, [1], {"a": 1}])
def test_it_refuses_a_request_with_an_invalid_id(request_id: object) -> None:
    error = _refusal(_body({"jsonrpc": "2.0", "id": request_id, "method": "ping"}))
    assert (error.http_status, error.code, error.id) == (400, INVALID_REQUEST, None)
    assert '"id"' in error.message


@pytest.mark.parametrize("params", [None, [], [1, 2], "x", 3, True])
def test_it_refuses_params_that_are_not_an_object(params: object) -> None:
    error = _refusal(_body({"jsonrpc": "2.0", "id": 9, "method": "tools/list", "params": params}))
    assert (error.http_status, error.code, error.id) == (400, INVALID_REQUEST, 9)
    assert '"params"' in error.message


def test_it_refuses_bad_params_on_a_notification_without_an_id() -> None:
    error = _refusal(_body({"jsonrpc": "2.0", "method": "notifications/x", "params": []}))
    assert (error.code, error.id) == (INVALID_REQUEST, None)


@pytest.mark.parametrize("raw", [{"jsonrpc": "2.0", "id": 3}, {"jsonrpc": "2.0", "id": 3, "params": {}}])
def test_it_refuses_a_message_without_method_result_or_error(raw: dict[str, object]) -> None:
    error = _refusal(_body(raw))
    assert (error.http_status, error.code, error.id) == (400, INVALID_REQUEST, 3)
    assert '"method"' in error.message


def test_it_refuses_a_response_with_both_result_and_error() -> None:
    error = _refusal(_body({"jsonrpc": "2.0", "id": 3, "result": {}, "error": {"code": 1, "message": "x"}}))
    assert (error.http_status, error.code, error.id) == (400, INVALID_REQUEST, 3)
    assert "both" in error.message


@pytest.mark.parametrize(
    "raw",
    [
        {"jsonrpc": "2.0", "result": {}},
        {"jsonrpc": "2.0", "id": None, "result": {}},
        {"jsonrpc": "2.0", "id": True, "result": {}},
        {"jsonrpc": "2.0", "id": 2.5, "result": {}},
    ],
)
def test_it_refuses_a_result_response_without_a_valid_id(raw: dict[str, object]) -> None:
    error = _refusal(_body(raw))
    assert (error.http_status, error.code, error.id) == (400, INVALID_REQUEST, None)
    assert '"id"' in error.message


@pytest.mark.parametrize("result", [None, [], "ok", 1])
def test_it_refuses_a_result_that_is_not_an_object(result: object) -> None:
    error = _refusal(_body({"jsonrpc": "2.0", "id": "q", "result": result}))
    assert (error.http_status, error.code, error.id) == (400, INVALID_REQUEST, "q")
    assert '"result"' in error.message


@pytest.mark.parametrize("request_id", [True, 1.5, [], {}])
def test_it_refuses_an_error_response_with_an_invalid_id(request_id: object) -> None:
    error = _refusal(_body({"jsonrpc": "2.0", "id": request_id, "error": {"code": 1, "message": "x"}}))
    assert (error.http_status, error.code, error.id) == (400, INVALID_REQUEST, None)
    assert '"id"' in error.message


@pytest.mark.parametrize(
    "error_value",
    [
        None,
        "boom",
        [],
        {"message": "x"},
        {"code": "1", "message": "x"},
        {"code": True, "message": "x"},
        {"code": 1.5, "message": "x"},
        {"code": 1},
        {"code": 1, "message": 2},
    ],
)
def test_it_refuses_a_malformed_error_object(error_value: object) -> None:
    error = _refusal(_body({"jsonrpc": "2.0", "id": 11, "error": error_value}))
    assert (error.http_status, error.code, error.id) == (400, INVALID_REQUEST, 11)
    assert '"error"' in error.message


# --------------------------------------------------------------------------------------------
# Response bodies
# --------------------------------------------------------------------------------------------


def test_it_builds_a_result_body() -> None:
    assert result_body(1, {}) == {"jsonrpc": "2.0", "id": 1, "result": {}}
    assert result_body("a", {"tools": []}) == {"jsonrpc": "2.0", "id": "a", "result": {"tools": []}}


def test_it_builds_an_error_body_without_data() -> None:
    assert error_body(None, PARSE_ERROR, "Parse error") == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32700, "message": "Parse error"},
    }


@pytest.mark.parametrize("data", [0, "", [], {}, False, {"detail": "x"}])
def test_it_keeps_falsy_but_present_error_data(data: object) -> None:
    body = error_body(3, INTERNAL_ERROR, "oops", data)
    assert body == {"jsonrpc": "2.0", "id": 3, "error": {"code": -32603, "message": "oops", "data": data}}


# --------------------------------------------------------------------------------------------
# Versions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "   "])
def test_it_reads_a_missing_version_header_as_2025_03_26(value: str | None) -> None:
    assert check_protocol_version_header(value) == "2025-03-26"


@pytest.mark.parametrize("version", SUPPORTED_PROTOCOL_VERSIONS)
def test_it_accepts_every_supported_version_header(version: str) -> None:
    assert check_protocol_version_header(version) == version
    assert check_protocol_version_header(f" {version}\t") == version


@pytest.mark.parametrize("value", ["2024-11-05", "2026-07-28", "latest", "2025-11-25, 2025-06-18"])
def test_it_refuses_an_unsupported_version_header(value: str) -> None:
    with pytest.raises(ProtocolError) as info:
        check_protocol_version_header(value)
    error = info.value
    assert (error.http_status, error.code, error.id, error.data) == (400, INVALID_REQUEST, None, None)
    assert error.message == f"Unsupported MCP-Protocol-Version: {value}"


@pytest.mark.parametrize("version", SUPPORTED_PROTOCOL_VERSIONS)
def test_it_echoes_a_supported_initialize_version(version: str) -> None:
    assert negotiate_initialize_version(version) == version


@pytest.mark.parametrize("requested", ["2024-11-05", "2026-07-28", "", None, 20251125, ["2025-06-18"]])
def test_it_offers_the_latest_version_otherwise(requested: object) -> None:
    assert negotiate_initialize_version(requested) == LATEST_PROTOCOL_VERSION


# --------------------------------------------------------------------------------------------
# Accept negotiation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "json"),
        ("", "json"),
        ("  ", "json"),
        ("*/*", "json"),
        ("application/json", "json"),
        ("Application/JSON", "json"),
        ("application/*", "json"),
        ("application/json; charset=utf-8", "json"),
        ("text/event-stream", "sse"),
        ("text/*", "sse"),
        ("application/json, text/event-stream", "json"),
        ("text/event-stream, application/json", "json"),
        ("text/event-stream;q=1, application/json;q=0.1", "json"),
        ("application/json;q=0, text/event-stream", "sse"),
        ("application/json; q=0.0, */*", "sse"),
        ("application/json;Q=0.000, text/event-stream", "sse"),
        ("text/html", None),
        ("text/html, application/xml", None),
        ("*/*;q=0", None),
        ("application/json;q=0", None),
        ("application/json;q=0, text/event-stream;q=0", None),
        ("application/*;q=0, application/json", "json"),
        ("application/json;q=0, application/*", None),
        ("*/*, application/json;q=0, text/event-stream;q=0", None),
        ("application/json;q=abc", "json"),
        ("application/json;q=5", "json"),
        ("application/json;q=-1, text/event-stream", "sse"),
        ('text/plain; note="a, application/json", text/event-stream', "sse"),
        ('text/plain; note="a \\" application/json,", text/event-stream', "sse"),
        ("json, text/event-stream", "sse"),
        ("*/json, text/event-stream", "sse"),
        ("/json, application/, text/event-stream", "sse"),
        (",,, text/event-stream ,", "sse"),
        ("application/json;q=0, application/json;q=0.5", "json"),
    ],
)
def test_it_picks_a_response_mode(accept: str | None, expected: str | None) -> None:
    assert response_mode(accept) == expected


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, False),
        ("", False),
        ("*/*", False),
        ("application/json", False),
        ("text/event-stream", True),
        ("TEXT/EVENT-STREAM", True),
        ("text/*", True),
        ("application/json, text/event-stream", True),
        ("text/event-stream;q=0, application/json", False),
        ("text/*;q=0.5, text/event-stream;q=0", False),
        ("text/event-stream;q=0.001", True),
        ("*/*, text/html", False),
    ],
)
def test_it_tells_whether_the_client_accepts_sse(accept: str | None, expected: bool) -> None:
    assert accepts_sse(accept) is expected


# --------------------------------------------------------------------------------------------
# server/discover, cursors
# --------------------------------------------------------------------------------------------


def test_it_recognises_the_discover_probe() -> None:
    probe = parse_message(_body({"jsonrpc": "2.0", "id": 1, "method": "server/discover"}))
    assert is_discover_probe(probe)
    assert not is_discover_probe(parse_message(_body({"jsonrpc": "2.0", "id": 1, "method": "initialize"})))
    assert not is_discover_probe(parse_message(_body({"jsonrpc": "2.0", "id": 1, "result": {}})))


@pytest.mark.parametrize("params", [None, {}, {"cursor": None}, {"_meta": {"progressToken": 1}}])
def test_it_allows_a_list_request_without_a_cursor(params: dict[str, object] | None) -> None:
    assert check_list_cursor(params, 1) is None


@pytest.mark.parametrize("cursor", ["abc", "", 0, {"page": 2}])
def test_it_refuses_any_cursor(cursor: object) -> None:
    with pytest.raises(ProtocolError) as info:
        check_list_cursor({"cursor": cursor}, "list-1")
    error = info.value
    assert (error.http_status, error.code, error.message, error.id) == (
        200,
        INVALID_PARAMS,
        "Invalid cursor",
        "list-1",
    )


# --------------------------------------------------------------------------------------------
# SSE encoding
# --------------------------------------------------------------------------------------------


def test_it_encodes_an_sse_event() -> None:
    encoded = encode_sse_event({"jsonrpc": "2.0", "id": 1, "result": {"a": [1, 2]}})
    assert encoded == b'event: message\ndata: {"jsonrpc":"2.0","id":1,"result":{"a":[1,2]}}\n\n'


def test_it_encodes_an_sse_event_with_id_and_without_event() -> None:
    assert encode_sse_event({"x": 1}, event=None, event_id="42") == b'id: 42\ndata: {"x":1}\n\n'
    assert (
        encode_sse_event({"x": 1}, event="custom", event_id="") == b'id: \nevent: custom\ndata: {"x":1}\n\n'
    )


def test_it_encodes_unicode_and_line_breaks_on_one_data_line() -> None:
    encoded = encode_sse_event({"text": "héllo\nツ\r\u2028end"})
    assert encoded.count(b"\n") == 3
    assert "héllo".encode() in encoded
    assert encoded.startswith(b"event: message\ndata: ")
    assert encoded.endswith(b"\n\n")


@pytest.mark.parametrize(
    "kwargs",
    [{"event": "a\nb"}, {"event": "a\rb"}, {"event_id": "1\n"}, {"event_id": "1\r"}, {"event_id": "1\0"}],
)
def test_it_refuses_sse_fields_that_would_break_framing(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="must not contain"):
        encode_sse_event({"x": 1}, **kwargs)


def test_it_allows_nul_in_an_sse_event_name() -> None:
    assert encode_sse_event({}, event="a\0b").startswith(b"event: a\0b\n")


def test_it_refuses_non_json_numbers_in_sse() -> None:
    with pytest.raises(ValueError):
        encode_sse_event({"x": float("nan")})


def test_it_round_trips_encoded_events_through_the_parser() -> None:
    messages: list[dict[str, object]] = [
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}},
        {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "a\nb ツ"}]}},
    ]
    stream = b"".join(encode_sse_event(m, event_id=str(i)) for i, m in enumerate(messages))
    events = SSEParser().feed(stream)
    assert [json.loads(e.data) for e in events] == messages
    assert [(e.event, e.id) for e in events] == [("message", "0"), ("message", "1")]


# --------------------------------------------------------------------------------------------
# SSE parsing
# --------------------------------------------------------------------------------------------

_STREAM = (
    "\ufeff: comment to keep the connection alive\r\n"
    "retry: 1500\r\n"
    "id: 1\r\n"
    "event: message\r\n"
    'data: {"jsonrpc":"2.0","method":"notifications/progress","params":{"m":"héllo 😀"}}\r\n'
    "\r\n"
    "data: first line\r"
    "data:second line\r"
    "data:  two spaces\r"
    "\r"
    "event: custom\n"
    "id: 2\n"
    "data\n"
    "data: ツ\n"
    "unknown: field\n"
    "\n"
    "id: 3\n"
    "\n"
    'data: {"jsonrpc":"2.0","id":1,"result":{}}\n'
    "\n"
    "data: unterminated"
).encode("utf-8")

_EXPECTED = [
    SSEEvent(
        event="message",
        data='{"jsonrpc":"2.0","method":"notifications/progress","params":{"m":"héllo 😀"}}',
        id="1",
        retry=1500,
    ),
    SSEEvent(event="message", data="first line\nsecond line\n two spaces", id="1", retry=None),
    SSEEvent(event="custom", data="\nツ", id="2", retry=None),
    SSEEvent(event="message", data='{"jsonrpc":"2.0","id":1,"result":{}}', id="3", retry=None),
]


def _parse_chunks(chunks: list[bytes]) -> list[SSEEvent]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    events.extend(parser.close())
    return events


def test_it_parses_a_whole_sse_stream() -> None:
    assert _parse_chunks([_STREAM]) == _EXPECTED


def test_it_parses_the_same_events_at_every_split_offset() -> None:
    for offset in range(len(_STREAM) + 1):
        assert _parse_chunks([_STREAM[:offset], _STREAM[offset:]]) == _EXPECTED, offset


def test_it_parses_the_same_events_at_every_pair_of_split_offsets() -> None:
    for first in range(0, len(_STREAM) + 1, 3):
        for second in range(first, len(_STREAM) + 1, 5):
            chunks = [_STREAM[:first], _STREAM[first:second], _STREAM[second:]]
            assert _parse_chunks(chunks) == _EXPECTED, (first, second)


def test_it_parses_the_same_events_one_byte_at_a_time() -> None:
    assert _parse_chunks([_STREAM[i : i + 1] for i in range(len(_STREAM))]) == _EXPECTED


def test_it_treats_crlf_split_between_cr_and_lf_as_one_line_break() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\ndata: b\r\n\r") == [SSEEvent("message", "a\nb", None, None)]
    assert parser.feed(b"\n") == []
    assert parser.feed(b"data: c\n\n") == [SSEEvent("message", "c", None, None)]


def test_it_remembers_a_trailing_cr_across_empty_chunks() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"") == []
    assert parser.feed(b"\n") == []
    assert parser.feed(b"\n") == [SSEEvent("message", "a", None, None)]


def test_it_treats_a_cr_not_followed_by_lf_as_a_line_break() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"data: b\r\r") == [SSEEvent("message", "a\nb", None, None)]


def test_it_decodes_multibyte_characters_split_across_chunks() -> None:
    encoded = "data: é😀ツ\n\n".encode()
    for offset in range(len(encoded) + 1):
        parser = SSEParser()
        events = parser.feed(encoded[:offset]) + parser.feed(encoded[offset:])
        assert events == [SSEEvent("message", "é😀ツ", None, None)], offset


def test_it_replaces_invalid_utf8() -> None:
    assert SSEParser().feed(b"data: a\xffb\n\n") == [SSEEvent("message", "a\ufffdb", None, None)]


def test_it_strips_a_bom_split_across_chunks_but_only_at_stream_start() -> None:
    parser = SSEParser()
    assert parser.feed(b"\xef") == []
    assert parser.feed(b"\xbb") == []
    assert parser.feed(b"\xbfdata: x\n\n") == [SSEEvent("message", "x", None, None)]
    # A second BOM is part of the field name, which is then unknown and ignored.
    assert SSEParser().feed(b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\n") == []
    assert parser.feed(b"\xef\xbb\xbfdata: y\n\n") == []


def test_it_ignores_comments_and_unknown_fields() -> None:
    parser = SSEParser()
    assert parser.feed(b":\n: ping\n:data: no\nfoo: bar\nDATA: upper\n\n") == []
    assert parser.feed(b"data: ok\n\n") == [SSEEvent("message", "ok", None, None)]


def test_it_strips_only_one_leading_space() -> None:
    assert SSEParser().feed(b"data:x\ndata: y\ndata:  z\ndata:\n\n") == [
        SSEEvent("message", "x\ny\n z\n", None, None)
    ]


def test_it_dispatches_an_empty_data_field_but_not_a_block_without_data() -> None:
    parser = SSEParser()
    assert parser.feed(b"event: x\n\n\n\n") == []
    assert parser.feed(b"data:\n\n") == [SSEEvent("message", "", None, None)]
    assert parser.feed(b"data\n\n") == [SSEEvent("message", "", None, None)]


def test_it_resets_the_event_type_after_each_block() -> None:
    parser = SSEParser()
    assert parser.feed(b"event: a\n\ndata: 1\n\n") == [SSEEvent("message", "1", None, None)]
    assert parser.feed(b"event: b\ndata: 2\n\ndata: 3\n\nevent:\ndata: 4\n\n") == [
        SSEEvent("b", "2", None, None),
        SSEEvent("message", "3", None, None),
        SSEEvent("message", "4", None, None),
    ]


def test_it_keeps_the_last_event_id_across_events_and_priming_blocks() -> None:
    parser = SSEParser()
    assert parser.last_event_id is None
    assert parser.feed(b"id: prime-1\nretry: 3000\n\n") == []
    assert (parser.last_event_id, parser.retry) == ("prime-1", 3000)
    assert parser.feed(b"data: a\n\n") == [SSEEvent("message", "a", "prime-1", None)]
    assert parser.feed(b"id: bad\0id\ndata: b\n\n") == [SSEEvent("message", "b", "prime-1", None)]
    assert parser.feed(b"id\ndata: c\n\n") == [SSEEvent("message", "c", "", None)]
    assert parser.last_event_id == ""


@pytest.mark.parametrize(
    "value", ["", "12a", "-5", "1.5", "  7", "\uff11\uff12"]
)  # full-width digits: not ASCII
def test_it_ignores_an_invalid_retry(value: str) -> None:
    parser = SSEParser()
    events = parser.feed(f"retry: 10\n\nretry:{value}\ndata: x\n\n".encode())
    assert events == [SSEEvent("message", "x", None, None)]
    assert parser.retry == 10


def test_it_reports_retry_on_the_event_that_carries_it() -> None:
    parser = SSEParser()
    assert parser.feed(b"retry: 5\nretry: 7\ndata: a\n\ndata: b\n\n") == [
        SSEEvent("message", "a", None, 7),
        SSEEvent("message", "b", None, None),
    ]
    assert parser.retry == 7


def test_it_discards_an_unterminated_last_event_on_close() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: done\n\ndata: half") == [SSEEvent("message", "done", None, None)]
    assert parser.close() == []
    assert parser.close() == []
    with pytest.raises(ValueError, match="closed"):
        parser.feed(b"\n\n")


def test_it_discards_a_complete_line_without_its_blank_line_on_close() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\n") == []
    assert parser.close() == []


def test_it_closes_cleanly_inside_a_multibyte_character() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: \xe3\x83") == []
    assert parser.close() == []


# --------------------------------------------------------------------------------------------
# Tool names
# --------------------------------------------------------------------------------------------


def _hash8(slug: str, name: str) -> str:
    return hashlib.sha256(f"{slug}\0{name}".encode()).hexdigest()[:8]


def _assert_valid_and_unique(tools: list[ExposedTool]) -> None:
    names = [tool.name for tool in tools]
    assert len(names) == len(set(names))
    for name in names:
        assert TOOL_NAME_PATTERN.match(name), name
        assert TOOL_NAME_PATTERN.fullmatch(name), name
        assert len(name) <= 64


def test_it_exposes_valid_names_unchanged() -> None:
    assert SEPARATOR == "__"
    assert build_tool_names([("github", "create_issue"), ("fs", "read-file")]) == [
        ExposedTool("fs__read-file", "fs", "read-file", False),
        ExposedTool("github__create_issue", "github", "create_issue", False),
    ]


def test_it_accepts_an_empty_input_and_a_generator() -> None:
    assert build_tool_names([]) == []
    assert build_tool_names(pair for pair in [("s", "t")]) == [ExposedTool("s__t", "s", "t", False)]


@pytest.mark.parametrize(
    ("original", "expected"),
    [
        ("read.file", "fs__read_file"),
        ("read file", "fs__read_file"),
        ("café", "fs__caf_"),
        ("ツール", "fs_____"),
        ("a/b:c", "fs__a_b_c"),
        ("tool\n", "fs__tool_"),
        ("😀", "fs___"),
    ],
)
def test_it_rewrites_invalid_characters(original: str, expected: str) -> None:
    [tool] = build_tool_names([("fs", original)])
    assert tool == ExposedTool(expected, "fs", original, True)
    _assert_valid_and_unique([tool])


def test_it_rewrites_an_invalid_slug_too() -> None:
    [tool] = build_tool_names([("my.server", "t")])
    assert tool == ExposedTool("my_server__t", "my.server", "t", True)


def test_it_keeps_a_64_character_name_and_shortens_a_65_character_one() -> None:
    slug = "s"
    exact = "x" * (64 - 3)
    over = "y" * (65 - 3)
    by_original = {t.original_name: t for t in build_tool_names([(slug, exact), (slug, over)])}
    assert by_original[exact] == ExposedTool(f"s__{exact}", slug, exact, False)
    shortened = by_original[over]
    assert shortened.rewritten
    assert shortened.name == f"s__{'y' * 52}-{_hash8(slug, over)}"
    assert len(shortened.name) == 64


def test_it_shortens_100_character_names_stably_and_uniquely() -> None:
    first = "a" * 99 + "1"
    second = "a" * 99 + "2"
    dotted = "b." * 50
    tools = build_tool_names([("srv", first), ("srv", second), ("srv", dotted)])
    _assert_valid_and_unique(tools)
    names = {t.original_name: t.name for t in tools}
    assert names[first] == f"srv__{'a' * 50}-{_hash8('srv', first)}"
    assert names[second] == f"srv__{'a' * 50}-{_hash8('srv', second)}"
    assert names[dotted] == f"srv__{'b_' * 25}-{_hash8('srv', dotted)}"
    assert all(t.rewritten for t in tools)
    assert build_tool_names([("srv", first)])[0].name == names[first]


def test_it_lets_the_valid_name_win_a_collision() -> None:
    tools = build_tool_names([("s", "a.b"), ("s", "a_b")])
    assert tools == [
        ExposedTool(f"s__a_b-{_hash8('s', 'a.b')}", "s", "a.b", True),
        ExposedTool("s__a_b", "s", "a_b", False),
    ]


def test_it_suffixes_every_member_of_a_collision_between_rewritten_names() -> None:
    tools = build_tool_names([("s", "a b"), ("s", "a.b")])
    assert tools == [
        ExposedTool(f"s__a_b-{_hash8('s', 'a b')}", "s", "a b", True),
        ExposedTool(f"s__a_b-{_hash8('s', 'a.b')}", "s", "a.b", True),
    ]


def test_it_resolves_a_collision_between_two_valid_names_by_sort_order() -> None:
    tools = build_tool_names([("a__b", "c"), ("a", "b__c")])
    assert tools == [
        ExposedTool("a__b__c", "a", "b__c", False),
        ExposedTool(f"a__b__c-{_hash8('a__b', 'c')}", "a__b", "c", True),
    ]


def test_it_resolves_a_three_way_collision() -> None:
    tools = build_tool_names([("s", "x.y"), ("s", "x_y"), ("s", "x y"), ("t", "x_y")])
    _assert_valid_and_unique(tools)
    assert [t.name for t in tools if not t.rewritten] == ["s__x_y", "t__x_y"]


def test_it_resalts_a_suffix_that_is_still_taken() -> None:
    long_name = "z" * 100 + "."
    [rewritten] = build_tool_names([("s", long_name)])
    assert rewritten.name.startswith("s__") and len(rewritten.name) == 64
    # A valid tool whose plain name happens to equal the shortened name keeps it...
    squatter = rewritten.name[len("s__") :]
    tools = build_tool_names([("s", long_name), ("s", squatter)])
    _assert_valid_and_unique(tools)
    by_original = {t.original_name: t for t in tools}
    assert by_original[squatter] == ExposedTool(rewritten.name, "s", squatter, False)
    # ... and the rewritten one moves to a re-salted hash.
    salted = hashlib.sha256(f"s\0{long_name}\x001".encode()).hexdigest()[:8]
    assert by_original[long_name].name == f"s__{'z' * 52}-{salted}"


def test_it_resalts_when_a_suffixed_name_is_another_tools_plain_name() -> None:
    taken = f"a_b-{_hash8('s', 'a.b')}"
    tools = build_tool_names([("s", "a.b"), ("s", "a_b"), ("s", taken)])
    _assert_valid_and_unique(tools)
    by_original = {t.original_name: t.name for t in tools}
    assert by_original["a_b"] == "s__a_b"
    assert by_original[taken] == f"s__{taken}"
    salted = hashlib.sha256(b"s\0a.b\x001").hexdigest()[:8]
    assert by_original["a.b"] == f"s__a_b-{salted}"


def test_it_keeps_one_of_duplicate_pairs() -> None:
    assert build_tool_names([("s", "t"), ("s", "t"), ("s", "t.x"), ("s", "t.x")]) == [
        ExposedTool("s__t", "s", "t", False),
        ExposedTool("s__t_x", "s", "t.x", True),
    ]


def test_it_handles_surrogates_and_empty_names() -> None:
    tools = build_tool_names([("s", "\ud800"), ("s", ""), ("", "t")])
    _assert_valid_and_unique(tools)
    assert [(t.name, t.rewritten) for t in tools] == [("__t", False), ("s__", False), ("s___", True)]


_MESSY = [
    ("github", "create_issue"),
    ("github", "create.issue"),
    ("github", "create issue"),
    ("fs", "read.file"),
    ("fs", "read_file"),
    ("fs", "ツール"),
    ("fs", "___"),
    ("fs", "x" * 100),
    ("fs", "x" * 99 + "."),
    ("fs", "x" * 99 + "_"),
    ("my.server", "tool"),
    ("my_server", "tool"),
    ("a__b", "c"),
    ("a", "b__c"),
    ("time", "get_current_time"),
    ("time", "get_current_time"),
    ("everything", "get-env"),
    ("everything", "echo"),
    ("weird", "tab\there"),
    ("weird", "new\nline"),
    ("weird", "emoji😀"),
    ("weird", ""),
]


def test_it_is_independent_of_input_order() -> None:
    expected = build_tool_names(_MESSY)
    rng = random.Random(1234)
    for _ in range(50):
        shuffled = list(_MESSY)
        rng.shuffle(shuffled)
        assert build_tool_names(shuffled) == expected


def test_it_sorts_by_slug_and_original_name() -> None:
    tools = build_tool_names(_MESSY)
    keys = [(t.server_slug, t.original_name) for t in tools]
    assert keys == sorted(set(_MESSY))


def test_it_exposes_only_valid_unique_names_and_flags_rewrites() -> None:
    tools = build_tool_names(_MESSY)
    _assert_valid_and_unique(tools)
    for tool in tools:
        assert tool.rewritten == (tool.name != f"{tool.server_slug}__{tool.original_name}")


def test_it_round_trips_through_the_reverse_map() -> None:
    tools = build_tool_names(_MESSY)
    reverse = tool_reverse_map(tools)
    assert len(reverse) == len(tools)
    assert set(reverse.values()) == set(_MESSY)
    for tool in tools:
        assert reverse[tool.name] == (tool.server_slug, tool.original_name)


def test_it_refuses_a_reverse_map_with_duplicate_names() -> None:
    duplicated = [ExposedTool("s__t", "s", "t", False), ExposedTool("s__t", "s", "t.", True)]
    with pytest.raises(ValueError, match="duplicate exposed tool name: s__t"):
        tool_reverse_map(duplicated)
    assert tool_reverse_map([]) == {}


def test_it_needs_fullmatch_because_dollar_accepts_a_trailing_newline() -> None:
    assert TOOL_NAME_PATTERN.match("s__tool\n")  # why the module never uses .match
    assert protocol._is_valid_tool_name("s__tool\n") is False
    assert protocol._is_valid_tool_name("x" * 65) is False
    assert protocol._is_valid_tool_name("") is False
