"""Server-to-client requests and logging through a real gateway process, end to end: the official Python SDK
client (with and without sampling / elicitation callbacks) in front, server-everything and a Python SDK
server behind, all on 127.0.0.1 (gateway/relay.py, gateway/standalone.py)."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.e2e import test_gateway_e2e
from tests.e2e.test_gateway_e2e import Raw, Stack

pytestmark = pytest.mark.e2e
stack = test_gateway_e2e.stack  # the same module-scoped stack (its own instance for this module)

ANSWER = "forty-two"


async def _sample(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    prompt = params.messages[0].content
    text = prompt.text if isinstance(prompt, types.TextContent) else ""
    return types.CreateMessageResult(
        role="assistant",
        content=types.TextContent(type="text", text=f"{ANSWER} ({len(text)} chars asked)"),
        model="test-model",
    )


async def _elicit(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"name": "Ada"})


@asynccontextmanager
async def _client(stack: Stack, token: str, **options: Any) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30.0, read=60.0)
        ) as http,
        Client(streamable_http_client(stack.url, http_client=http), mode="legacy", **options) as client,
    ):
        yield client


def _failure(response: dict[str, Any]) -> str:
    """The text of a failed call: its JSON-RPC error (the Python SDK server) or its isError result."""
    if "error" in response:
        return str(response["error"]["message"])
    assert response["result"]["isError"] is True
    return str(response["result"]["content"][0]["text"])


def _text(result: types.CallToolResult) -> str:
    return "\n".join(part.text for part in result.content if isinstance(part, types.TextContent))


def test_sampling_reaches_the_client_and_its_answer_the_upstream(stack: Stack) -> None:
    async def main() -> tuple[str, str, str]:
        async with _client(stack, stack.tokens[0], sampling_callback=_sample) as client:
            tools = {tool.name for tool in (await client.list_tools()).tools}
            assert "ev__trigger-sampling-request" in tools  # the gateway declares sampling upstream
            everything = await client.call_tool("ev__trigger-sampling-request", {"prompt": "life"})
            python = await client.call_tool("py__ask_llm", {"prompt": "the meaning of life"})
            again = await client.call_tool("py__ask_llm", {"prompt": "once more"})
            return _text(everything), _text(python), _text(again)

    everything, python, again = anyio.run(main)
    assert ANSWER in everything and "test-model" in everything
    assert python == f"model said: {ANSWER} (19 chars asked)"
    assert again == f"model said: {ANSWER} (9 chars asked)"


def test_elicitation_reaches_the_client_and_its_answer_the_upstream(stack: Stack) -> None:
    async def main() -> tuple[str, str]:
        async with _client(stack, stack.tokens[0], elicitation_callback=_elicit) as client:
            everything = await client.call_tool("ev__trigger-elicitation-request", {})
            python = await client.call_tool("py__ask_name", {})
            return _text(everything), _text(python)

    everything, python = anyio.run(main)
    assert "User provided the requested information" in everything and "Name: Ada" in everything
    assert python == "hello Ada"


@pytest.mark.parametrize(
    ("tool", "arguments", "capability"),
    [
        ("py__ask_name", {}, "elicitation"),
        ("py__ask_llm", {"prompt": "x"}, "sampling"),
        ("ev__trigger-sampling-request", {"prompt": "x"}, "sampling"),
        ("ev__trigger-elicitation-request", {}, "elicitation"),
    ],
)
def test_without_the_capability_the_tool_fails_at_once(
    stack: Stack, tool: str, arguments: dict[str, Any], capability: str
) -> None:
    async def main() -> tuple[str, float]:
        async with _client(stack, stack.tokens[1]) as client:  # no callbacks: no capabilities declared
            started = time.monotonic()
            try:
                result = await client.call_tool(tool, arguments)
            except MCPError as exc:  # the Python SDK server turns the refusal into the call's own error
                return exc.error.message, time.monotonic() - started
            assert result.is_error  # server-everything turns it into a tool error
            return _text(result), time.monotonic() - started

    text, elapsed = anyio.run(main)
    assert f"did not declare the {capability} capability" in text
    assert elapsed < 5  # the servers' timeouts are 20 s (py) and 60 s (ev): nothing waited for them


def test_a_client_that_takes_only_json_gets_a_clear_error_at_once(stack: Stack) -> None:
    raw = Raw(stack.gateway.port, stack.slug, stack.tokens[2])
    status, headers, _ = raw.post(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {"elicitation": {}, "sampling": {}},
                "clientInfo": {"name": "json-only", "version": "1"},
            },
        }
    )
    assert status == 200
    raw.session_id = headers["mcp-session-id"]
    started = time.monotonic()
    status, headers, body = raw.post(
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "py__ask_name"}},
        accept="application/json",
    )
    assert time.monotonic() - started < 5
    assert status == 200 and headers["content-type"].startswith("application/json")
    assert "accepts only JSON replies" in _failure(json.loads(body))


@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")
def test_log_levels_are_forwarded_and_applied_per_client(stack: Stack) -> None:
    async def main() -> dict[str, Any]:
        quiet_logs: list[types.LoggingMessageNotificationParams] = []
        chatty_logs: list[types.LoggingMessageNotificationParams] = []

        async def quiet_log(params: types.LoggingMessageNotificationParams) -> None:
            quiet_logs.append(params)

        async def chatty_log(params: types.LoggingMessageNotificationParams) -> None:
            chatty_logs.append(params)

        out: dict[str, Any] = {}
        async with (
            _client(stack, stack.tokens[3], logging_callback=quiet_log) as quiet,
            _client(stack, stack.tokens[3], logging_callback=chatty_log) as chatty,
        ):
            await quiet.set_logging_level("error")
            out["after_error"] = _text(await quiet.call_tool("py__last_level", {}))
            await chatty.set_logging_level("debug")
            out["after_debug"] = _text(await chatty.call_tool("py__last_level", {}))
            await quiet.call_tool("py__log_levels", {})
            await chatty.call_tool("py__log_levels", {})
        out["quiet"] = [(log.level, log.logger, log.data) for log in quiet_logs]
        out["chatty"] = [(log.level, log.logger, log.data) for log in chatty_logs]
        return out

    out = anyio.run(main)
    assert out["after_error"] == "error"
    assert out["after_debug"] == "debug"  # the shared upstream session runs at the most verbose level asked
    assert out["quiet"] == [("error", "py/levels", "a error message")]
    assert out["chatty"] == [
        (level, "py/levels", f"a {level} message") for level in ("debug", "info", "warning", "error")
    ]


# -- raw streaming, to answer on another connection -------------------------------------------------------------
def sse_messages(response: http.client.HTTPResponse) -> Iterator[dict[str, Any]]:
    """The JSON-RPC messages of an SSE response as they arrive."""
    data: list[str] = []
    while True:
        line = response.readline()
        if not line:
            return
        text = line.decode("utf-8").rstrip("\r\n")
        if text.startswith("data:"):
            data.append(text[5:].lstrip(" "))
        elif not text and data:
            yield json.loads("\n".join(data))
            data = []


def open_call(port: int, raw: Raw, message: dict[str, Any]) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request(
        "POST",
        f"/ws/{raw.slug}",
        body=json.dumps(message),
        headers={
            "Authorization": f"Bearer {raw.token}",
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2025-11-25",
            "Mcp-Session-Id": raw.session_id or "",
        },
    )
    return connection.getresponse()


def initialize_with(raw: Raw, capabilities: dict[str, Any]) -> None:
    status, headers, _ = raw.post(
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": capabilities,
                "clientInfo": {"name": "raw", "version": "1"},
            },
        }
    )
    assert status == 200
    raw.session_id = headers["mcp-session-id"]


def test_a_relayed_request_carries_a_gateway_id_and_an_error_answer_reaches_the_upstream(
    stack: Stack,
) -> None:
    raw = Raw(stack.gateway.port, stack.slug, stack.tokens[2])
    initialize_with(raw, {"elicitation": {}})
    response = open_call(
        stack.gateway.port,
        raw,
        {"jsonrpc": "2.0", "id": "call-1", "method": "tools/call", "params": {"name": "py__ask_name"}},
    )
    assert response.status == 200 and response.getheader("Content-Type", "").startswith("text/event-stream")
    messages = sse_messages(response)
    request = next(messages)
    assert request["method"] == "elicitation/create" and request["id"].startswith("aerostack-relay-")
    assert request["params"]["message"] == "What is your name?"
    # The client answers with an error: the upstream's ctx.elicit fails with it and the tool reports it.
    error = {"code": -32042, "message": "the user walked away"}
    status, _, _ = raw.post({"jsonrpc": "2.0", "id": request["id"], "error": error})
    assert status == 202
    rest = list(messages)
    assert rest[-1]["id"] == "call-1" and "the user walked away" in _failure(rest[-1])
    response.close()
    # Answering again changes nothing (the relay is over): still 202, never an error.
    status, _, _ = raw.post({"jsonrpc": "2.0", "id": request["id"], "result": {"action": "accept"}})
    assert status == 202


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ({"elicitation_callback": _elicit}, "The client did not declare the sampling capability"),
        ({}, "No call of a client that can answer it is in flight on this upstream session"),
    ],
    ids=["elicitation-only-client", "client-without-capabilities"],
)
def test_a_request_on_the_upstreams_get_stream_is_refused_at_once(
    stack: Stack, options: dict[str, Any], why: str
) -> None:
    """The Python SDK sends ``create_message`` without ``related_request_id`` on its GET stream: the gateway
    reads that stream while calls run, so the request is answered at once instead of being lost."""

    async def main() -> tuple[str, float]:
        async with _client(stack, stack.tokens[1], **options) as client:
            started = time.monotonic()
            with pytest.raises(MCPError) as raised:
                await client.call_tool("py__ask_llm", {"prompt": "x", "standalone": True})
            return raised.value.error.message, time.monotonic() - started

    message, elapsed = anyio.run(main)
    assert why in message
    assert elapsed < 5  # the server's timeout is 20 s


def test_url_mode_elicitation_and_its_error_path_pass_through(stack: Stack) -> None:
    modes: list[str] = []

    async def elicit(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        modes.append(getattr(params, "mode", "form"))
        return types.ElicitResult(action="accept")

    async def main() -> tuple[str, int]:
        async with _client(stack, stack.tokens[0], elicitation_callback=elicit) as client:
            done = await client.call_tool("ev__trigger-url-elicitation", {"url": "https://example.com/auth"})
            with pytest.raises(MCPError) as raised:  # -32042 with the prerequisite, passed through as is
                await client.call_tool(
                    "ev__trigger-url-elicitation", {"url": "https://example.com/other", "errorPath": True}
                )
            return _text(done), raised.value.error.code

    text, code = anyio.run(main)
    assert "User completed the URL elicitation flow" in text and "https://example.com/auth" in text
    assert modes == ["url"]
    assert code == -32042


def test_url_mode_elicitation_is_refused_to_a_form_only_client(stack: Stack) -> None:
    raw = Raw(stack.gateway.port, stack.slug, stack.tokens[2])
    initialize_with(raw, {"elicitation": {}})  # an empty object: form mode only
    started = time.monotonic()
    status, _, body = raw.post(
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "ev__trigger-url-elicitation", "arguments": {"url": "https://example.com/a"}},
        }
    )
    assert status == 200 and time.monotonic() - started < 5
    assert "did not declare url-mode elicitation" in _failure(json.loads(body))


def test_a_request_on_the_upstreams_get_stream_reaches_the_clients_get_stream(stack: Stack) -> None:
    """With one client in flight, a request the upstream sends on its standalone GET stream goes to that
    client's own GET stream (gateway/live.py) and its answer back to the upstream."""

    async def main() -> tuple[str, float]:
        async with _client(stack, stack.tokens[0], sampling_callback=_sample) as client:
            started = time.monotonic()
            result = await client.call_tool("py__ask_llm", {"prompt": "from the side", "standalone": True})
            return _text(result), time.monotonic() - started

    text, elapsed = anyio.run(main)
    assert text == f"model said: {ANSWER} (13 chars asked)"
    assert elapsed < 10


def test_a_request_on_the_upstreams_get_stream_is_refused_at_once_without_a_client_get_stream(
    stack: Stack,
) -> None:
    """A client that can answer sampling but has no GET stream open anywhere: the request the upstream sends
    on its own GET stream cannot reach it, so it is refused at once (live.stream_open), not lost until the
    call's timeout (20 s here)."""
    raw = Raw(stack.gateway.port, stack.slug, stack.tokens[2])
    initialize_with(raw, {"sampling": {}})
    started = time.monotonic()
    status, _, body = raw.post(
        {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "tools/call",
            "params": {"name": "py__ask_llm", "arguments": {"prompt": "x", "standalone": True}},
        }
    )
    elapsed = time.monotonic() - started
    assert status == 200
    answer = next(iter(sse_messages_of(body)))
    assert "has no GET stream open" in _failure(answer)
    assert elapsed < 10


def sse_messages_of(body: bytes) -> list[dict[str, Any]]:
    """The JSON-RPC messages of a whole reply body, JSON or SSE."""
    text = body.decode("utf-8")
    if text.lstrip().startswith("{"):
        return [json.loads(text)]
    return [json.loads(line[5:].lstrip()) for line in text.splitlines() if line.startswith("data:")]
