"""The pure protocol layer of the two eras (gateway.protocol, gateway.modern, the translation helpers of
gateway.upstream): era detection, the modern validation ladder, header value encoding, error codes and
statuses, and result shaping. No Django, no network."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from gateway import modern, protocol
from gateway.upstream import legacy_shaped, modern_request

ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "c", "version": "1"},
}


def message(method: str, params: dict[str, Any] | None = None, **extra: Any) -> protocol.Message:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": 7, "method": method, **extra}
    if params is not None:
        body["params"] = params
    return protocol.parse_message(json.dumps(body).encode())


def check(msg: protocol.Message, **headers: str | None) -> protocol.ModernRequest:
    values: dict[str, str | None] = {
        "version_header": "2026-07-28",
        "method_header": msg.method,
        "name_header": None,
    }
    values.update(headers)
    return protocol.check_modern_request(msg, **values)  # type: ignore[arg-type]


def refusal(msg: protocol.Message, **headers: str | None) -> protocol.ProtocolError:
    with pytest.raises(protocol.ProtocolError) as info:
        check(msg, **headers)
    return info.value


# -- era detection ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "params", "header", "expected"),
    [
        ("initialize", {"_meta": ENVELOPE}, "2026-07-28", False),  # initialize always starts a legacy session
        ("server/discover", None, None, True),
        ("server/discover", None, "2025-11-25", True),
        ("tools/list", None, "2026-07-28", True),
        ("tools/list", None, "2099-01-01", True),  # unknown: modern, so that -32022 names what we speak
        ("tools/list", {"_meta": ENVELOPE}, "2025-11-25", True),  # the envelope wins (then: -32020)
        ("tools/list", {"_meta": {"progressToken": 1}}, "2025-11-25", False),
        ("tools/list", None, "2025-11-25", False),
        ("tools/list", None, " 2025-06-18 ", False),
        ("tools/list", None, "", False),
        ("tools/list", None, None, False),
        ("tools/call", {"name": "x", "_meta": "not an object"}, None, False),
    ],
)
def test_it_detects_the_era(method: str, params: Any, header: str | None, expected: bool) -> None:
    assert protocol.is_modern(message(method, params), header) is expected


# -- the modern ladder -----------------------------------------------------------------------------------------
def test_it_reads_the_envelope() -> None:
    meta = {**ENVELOPE, "io.modelcontextprotocol/logLevel": "debug", "progressToken": "p"}
    declared = check(message("tools/list", {"_meta": meta}))
    assert declared == protocol.ModernRequest(
        protocol_version="2026-07-28",
        client_capabilities={},
        client_info={"name": "c", "version": "1"},
        log_level="debug",
    )


@pytest.mark.parametrize("meta", [None, {}, {"io.modelcontextprotocol/clientCapabilities": {}}])
def test_a_request_without_the_envelope_is_invalid_params(meta: Any) -> None:
    params = {} if meta is None else {"_meta": meta}
    error = refusal(message("tools/list", params))
    assert (error.http_status, error.code, error.id) == (400, protocol.INVALID_PARAMS, 7)


def test_capabilities_must_be_an_object() -> None:
    meta = {**ENVELOPE, "io.modelcontextprotocol/clientCapabilities": []}
    assert refusal(message("tools/list", {"_meta": meta})).code == protocol.INVALID_PARAMS


@pytest.mark.parametrize(
    "headers",
    [
        {"version_header": None},
        {"version_header": "2025-11-25"},
        {"method_header": None},
        {"method_header": "tools/list"},
        {"name_header": None},
        {"name_header": "other"},
        {"name_header": "=?base64?!!!?="},
    ],
)
def test_headers_that_disagree_with_the_body_are_header_mismatch(headers: dict[str, str | None]) -> None:
    msg = message("tools/call", {"name": "py__add", "_meta": ENVELOPE})
    values: dict[str, str | None] = {"method_header": "tools/call", "name_header": "py__add", **headers}
    error = refusal(msg, **values)
    assert (error.http_status, error.code, error.id) == (400, protocol.HEADER_MISMATCH, 7)
    assert error.message.startswith("Header mismatch")


@pytest.mark.parametrize(("method", "key"), [("prompts/get", "name"), ("resources/read", "uri")])
def test_mcp_name_mirrors_prompts_and_resources_too(method: str, key: str) -> None:
    value = "file:///ünïcode.txt"
    msg = message(method, {key: value, "_meta": ENVELOPE})
    assert check(msg, name_header=protocol.encode_header_value(value)).protocol_version == "2026-07-28"
    assert refusal(msg, name_header="file:///other").code == protocol.HEADER_MISMATCH


def test_the_header_check_comes_before_the_version_check() -> None:
    meta = {**ENVELOPE, "io.modelcontextprotocol/protocolVersion": "2099-01-01"}
    # the header disagrees with the body: the client is told that, not that the body's version is unknown
    assert refusal(message("tools/list", {"_meta": meta})).code == protocol.HEADER_MISMATCH
    error = refusal(message("tools/list", {"_meta": meta}), version_header="2099-01-01")
    assert (error.http_status, error.code) == (400, protocol.UNSUPPORTED_PROTOCOL_VERSION)
    assert error.data == {"supported": list(protocol.ALL_PROTOCOL_VERSIONS), "requested": "2099-01-01"}
    assert error.to_body()["error"]["data"]["supported"][0] == "2026-07-28"  # type: ignore[index]


def test_an_unknown_header_version_without_an_envelope_is_unsupported() -> None:
    error = refusal(message("tools/list"), version_header="latest")
    assert error.code == protocol.UNSUPPORTED_PROTOCOL_VERSION and error.data["requested"] == "latest"  # type: ignore[index]


def test_a_bare_discover_is_answered() -> None:
    assert check(message("server/discover"), version_header=None, method_header=None).client_info is None
    assert refusal(message("server/discover"), version_header="1999-01-01").code == -32022


# -- header values -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("us-west1", "us-west1"),
        ("Hello, 世界", "=?base64?SGVsbG8sIOS4lueVjA==?="),
        (" padded ", "=?base64?IHBhZGRlZCA=?="),
        ("line1\nline2", "=?base64?bGluZTEKbGluZTI=?="),
        ("=?base64?literal?=", "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="),
    ],
)
def test_it_encodes_header_values_as_the_spec_shows(value: str, encoded: str) -> None:
    assert protocol.encode_header_value(value) == encoded
    assert protocol.decode_header_value(encoded) == value


@pytest.mark.parametrize("bad", ["=?base64?not base64?=", "=?base64?SGk=x?=", "=?base64?" + "/w==" + "?="])
def test_a_malformed_sentinel_never_matches(bad: str) -> None:
    assert protocol.decode_header_value(bad) is None


def test_non_canonical_base64_is_refused() -> None:
    assert base64.b64decode("SGl=") == b"Hi"  # lenient decoders accept it...
    assert protocol.decode_header_value("=?base64?SGl=?=") is None  # ...the comparison does not


# -- error codes and statuses --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("code", "sent"),
    [
        (-32020, -32020),
        (-32021, -32021),
        (-32022, -32022),
        (-32042, -32603),
        (-32099, -32603),
        (-32050, -32603),
        (-32000, -32000),
        (-32019, -32019),
        (-32001, -32001),
        (-32602, -32602),
        (-32100, -32100),
        (5, 5),
    ],
)
def test_no_undefined_code_of_the_reserved_range_is_sent(code: int, sent: int) -> None:
    assert protocol.client_error_code(code) == sent


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        (-32601, 200, 404),
        (-32602, 200, 400),
        (-32600, 200, 400),
        (-32603, 200, 200),
        (-32000, 429, 429),
        (-32601, 406, 406),
        (-32001, 401, 401),
        (-32020, 400, 400),
        (1234, 200, 200),
    ],
)
def test_modern_error_statuses(code: int, status: int, expected: int) -> None:
    assert protocol.modern_error_status(code, status) == expected


# -- result shaping --------------------------------------------------------------------------------------------
def exchange(method: str, scope: str = "public") -> modern.Exchange:
    request = protocol.ModernRequest("2026-07-28", {}, None, None)
    return modern.Exchange(request, 1, method, scope, {"name": "aerostack", "version": "0"})


def test_every_result_gets_result_type_and_the_server_identity() -> None:
    body, status = exchange("tools/call").shape(
        protocol.result_body(1, {"content": [], "_meta": {"x.y/z": 1}})
    )
    assert status == 200
    assert body["result"] == {
        "content": [],
        "resultType": "complete",
        "_meta": {"x.y/z": 1, "io.modelcontextprotocol/serverInfo": {"name": "aerostack", "version": "0"}},
    }


def test_lists_get_ttl_and_cache_scope() -> None:
    import time

    body, _ = exchange("tools/list", "private").shape(
        protocol.result_body(1, {"tools": []}), ttl_until=time.time() + 10
    )
    assert body["result"]["cacheScope"] == "private" and 9000 <= body["result"]["ttlMs"] <= 10000
    assert modern.ttl_ms(None) == 0 and modern.ttl_ms(time.time() - 5) == 0


def test_the_spliced_list_equals_the_shaped_one() -> None:
    import time

    until = time.time() + 20
    plain = protocol.result_body(3, {"tools": [{"name": "a", "inputSchema": {"type": "object"}}]})
    encoded = json.dumps(plain, separators=(",", ":")).encode()
    shaped = json.loads(exchange("tools/list").shape_encoded(encoded, ttl_until=until))
    expected, _ = exchange("tools/list").shape(plain, ttl_until=until)
    assert abs(shaped["result"].pop("ttlMs") - expected["result"].pop("ttlMs")) <= 5
    assert shaped == expected


def test_errors_keep_their_meaning_and_get_the_modern_status() -> None:
    body, status = exchange("tools/call").shape(protocol.error_body(1, -32042, "URL elicitation required"))
    assert status == 200 and body["error"] == {
        "code": -32603,
        "message": "URL elicitation required",
        "data": {"upstreamCode": -32042},
    }
    body, status = exchange("tools/call").shape(protocol.error_body(1, -32602, "Unknown tool: x"))
    assert status == 400 and body["error"] == {"code": -32602, "message": "Unknown tool: x"}


# -- the upstream side: requests to a modern upstream, and its answers for the handlers ------------------------
def test_a_request_to_a_modern_upstream_carries_the_envelope_and_the_original_name() -> None:
    original = {"jsonrpc": "2.0", "id": "g-1", "method": "tools/call", "params": {"name": "math.mul"}}
    body, headers = modern_request(original)
    assert original["params"] == {"name": "math.mul"}  # not modified
    meta = body["params"]["_meta"]
    assert meta["io.modelcontextprotocol/protocolVersion"] == "2026-07-28"
    assert meta["io.modelcontextprotocol/clientCapabilities"] == {}
    assert meta["io.modelcontextprotocol/clientInfo"]["name"] == "aerostack-gateway"
    assert dict(headers) == {
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "math.mul",
    }


def test_a_modern_answer_is_shaped_for_the_legacy_handlers() -> None:
    answer = {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {
            "content": [{"type": "text", "text": "42"}],
            "resultType": "complete",
            "ttlMs": 0,
            "cacheScope": "public",
            "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "up"}},
        },
    }
    assert legacy_shaped(answer)["result"] == {"content": [{"type": "text", "text": "42"}]}


INPUT_REQUIRED = {
    "jsonrpc": "2.0",
    "id": 1,
    "result": {
        "resultType": "input_required",
        "inputRequests": {"a": {"method": "elicitation/create", "params": {}}},
        "requestState": "opaque",
        "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "up"}},
    },
}


def test_an_input_required_answer_to_tools_call_is_kept_for_the_gateway_to_answer() -> None:
    result = legacy_shaped(INPUT_REQUIRED, input_required=True)["result"]
    assert result == {
        "resultType": "input_required",
        "inputRequests": {"a": {"method": "elicitation/create", "params": {}}},
        "requestState": "opaque",
    }


def test_an_input_required_answer_elsewhere_becomes_an_error_result() -> None:
    # Only tools/call, prompts/get and resources/read may ask for input (protocol.INPUT_REQUIRED_METHODS).
    result = legacy_shaped(INPUT_REQUIRED)["result"]
    assert result["isError"] is True and "elicitation/create" in result["content"][0]["text"]
    assert "for tools/call, prompts/get and resources/read only" in result["content"][0]["text"]


def test_a_modern_upstream_is_told_the_clients_own_capabilities() -> None:
    original = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "t"}}
    body, _ = modern_request(original, {"elicitation": {"form": {}}})
    assert body["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] == {
        "elicitation": {"form": {}}
    }
    body, _ = modern_request(original)
    assert body["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] == {}


def test_an_undefined_upstream_code_is_not_passed_on() -> None:
    error = legacy_shaped({"jsonrpc": "2.0", "id": 1, "error": {"code": -32077, "message": "odd"}})["error"]
    assert error == {"code": -32603, "message": "odd", "data": {"upstreamCode": -32077}}


# -- Mcp-Param-* -----------------------------------------------------------------------------------------------
SCHEMA = {
    "type": "object",
    "properties": {
        "region": {"type": "string", "x-mcp-header": "Region"},
        "limit": {"type": "integer", "x-mcp-header": "Limit"},
        "nested": {"type": "object", "properties": {"flag": {"type": "boolean", "x-mcp-header": "Flag"}}},
        "items": {"type": "array", "items": {"type": "string", "x-mcp-header": "Never"}},
    },
}


def annotations() -> list[tuple[tuple[str, ...], str, str]]:
    return list(protocol.x_mcp_headers(SCHEMA))


def test_it_finds_annotations_reachable_through_properties_only() -> None:
    assert annotations() == [
        (("region",), "Region", "string"),
        (("limit",), "Limit", "integer"),
        (("nested", "flag"), "Flag", "boolean"),
    ]


def test_matching_param_headers_pass() -> None:
    arguments = {"region": "Hello, 世界", "limit": 42, "nested": {"flag": True}}
    headers = [
        ("Mcp-Param-Region", "=?base64?SGVsbG8sIOS4lueVjA==?="),
        ("Mcp-Param-Limit", "42.0"),  # integers compare numerically
        ("mcp-param-flag", "true"),  # header names are case-insensitive
        ("Mcp-Param-Unknown", "forwarded, not checked"),
    ]
    modern.check_param_headers(annotations(), arguments, headers, 1)


@pytest.mark.parametrize(
    ("arguments", "headers"),
    [
        ({"region": "eu"}, []),  # missing
        ({"region": "eu"}, [("Mcp-Param-Region", "us")]),  # different
        ({}, [("Mcp-Param-Region", "eu")]),  # without its argument
        ({"region": None}, [("Mcp-Param-Region", "eu")]),  # null is absent
        ({"limit": 42}, [("Mcp-Param-Limit", "43")]),
        ({"nested": {"flag": False}}, [("Mcp-Param-Flag", "true")]),
    ],
)
def test_param_headers_that_disagree_are_header_mismatch(arguments: Any, headers: Any) -> None:
    with pytest.raises(protocol.ProtocolError) as info:
        modern.check_param_headers(annotations(), arguments, headers, 9)
    assert (info.value.http_status, info.value.code, info.value.id) == (400, protocol.HEADER_MISMATCH, 9)


def test_the_gateway_as_a_client_mirrors_annotated_arguments() -> None:
    arguments = {"region": "Hello, 世界", "limit": 7, "nested": {"flag": False}, "items": ["x"]}
    assert protocol.param_headers_for(annotations(), arguments) == [
        ("Mcp-Param-Region", "=?base64?SGVsbG8sIOS4lueVjA==?="),
        ("Mcp-Param-Limit", "7"),
        ("Mcp-Param-Flag", "false"),
    ]
    assert protocol.param_headers_for(annotations(), {"region": None}) == []


def test_param_headers_come_from_the_request_meta() -> None:
    meta = {
        "HTTP_MCP_PARAM_REGION": "eu",
        "HTTP_MCP_PARAM_TRACE_ID": "t",
        "HTTP_MCP_PARAM_": "x",
        "HTTP_X": "y",
    }
    assert sorted(modern.param_headers(meta)) == [("Mcp-Param-Region", "eu"), ("Mcp-Param-Trace-Id", "t")]
