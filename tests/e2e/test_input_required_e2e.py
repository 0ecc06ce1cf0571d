"""Multi round-trip requests (2026-07-28 ``input_required``) through a real gateway, in every era pairing
(gateway/inputreq.py): the official Python SDK 2.3 client in 2026-07-28 and legacy modes, with and without
sampling / elicitation callbacks, in front of a modern-only SDK server (tests/e2e/modern_upstream.py: tools
that elicit and sample through ``Resolve``), the dual-era SDK server spoken to in its legacy era
(tests/e2e/py_upstream.py: ``ctx.elicit``, ``create_message`` on the call's stream and on the GET stream)
and server-everything (legacy), all on 127.0.0.1; raw HTTP for forged and foreign ``requestState``."""

from __future__ import annotations

import base64
import http.client
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.conftest import need
from tests.e2e.upstreams import (
    RunningUpstream,
    node_available,
    start_everything_server,
    start_modern_upstream,
    start_python_upstream,
)
from tests.live import LiveServer, live_server

pytestmark = pytest.mark.e2e

SETUP = """
import json
from django.contrib.auth.models import User
from workspaces.services import workspace_create
from gateway.services import server_create
from tokens.services import token_create
owner = User.objects.create_user(username="owner@example.com", password="x-long-password-1")
ws = workspace_create(name="Rounds", owner=owner)
member = ws.members.get()
server_create(workspace=ws, actor=owner, name="Everything", slug="ev", url="{everything}")
server_create(workspace=ws, actor=owner, name="Python", slug="py", url="{python}", timeout_seconds=20)
server_create(workspace=ws, actor=owner, name="Quick", slug="quick", url="{python}", timeout_seconds=3)
server_create(workspace=ws, actor=owner, name="Modern", slug="mo", url="{modern}", timeout_seconds=20)
tokens = [token_create(workspace=ws, holder=member, name=f"t{{i}}", expires_in=None, created_by=owner).raw
          for i in range(4)]
other = workspace_create(name="Elsewhere", owner=owner)
server_create(workspace=other, actor=owner, name="Modern", slug="mo", url="{modern}", timeout_seconds=20)
foreign = token_create(workspace=other, holder=other.members.get(), name="f", expires_in=None, created_by=owner)
print(json.dumps({{"slug": ws.slug, "tokens": tokens, "other": other.slug, "foreign": foreign.raw}}))
"""
MODERN = "2026-07-28"


@dataclass
class Stack:
    gateway: LiveServer
    slug: str
    tokens: list[str]
    other: str
    foreign: str

    @property
    def url(self) -> str:
        return f"{self.gateway.url}/ws/{self.slug}"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    need(node_available(), "node is not installed: the end-to-end tests need it for server-everything")
    upstreams: list[RunningUpstream] = []
    try:
        everything = start_everything_server()
        upstreams.append(everything)
        python = start_python_upstream("--asking")  # with a prompt and a template that ask the client
        upstreams.append(python)
        modern = start_modern_upstream()
        upstreams.append(modern)
        workers = 2 if os.environ.get("REDIS_URL") else 1
        with live_server(
            workers=workers, threads=8, extra_env={"ALLOW_PRIVATE_UPSTREAMS": "true"}
        ) as gateway:
            script = SETUP.format(everything=everything.url, python=python.url, modern=modern.url)
            data = json.loads(gateway.manage("shell", "-c", script).strip().splitlines()[-1])
            yield Stack(gateway, data["slug"], data["tokens"], data["other"], data["foreign"])
    finally:
        for upstream in reversed(upstreams):
            upstream.stop()


# -- the SDK client's callbacks --------------------------------------------------------------------------------
async def _elicit(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
    if "Where does" in params.message:
        return types.ElicitResult(action="accept", content={"city": f"Paris ({params.message})"})
    return types.ElicitResult(action="accept", content={"name": "Ada"})


async def _sample(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    prompt = params.messages[0].content
    text = prompt.text if isinstance(prompt, types.TextContent) else ""
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(type="text", text=f"short ({len(text)})"), model="m"
    )


@asynccontextmanager
async def _client(url: str, token: str, mode: str, **callbacks: Any) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30.0, read=60.0)
        ) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode, **callbacks) as client,
    ):
        yield client


def _text(result: types.CallToolResult) -> str:
    return "\n".join(part.text for part in result.content if isinstance(part, types.TextContent))


def _calls(url: str, token: str, mode: str, calls: list[tuple[str, dict[str, Any]]], **callbacks: Any) -> Any:
    """Each call's text, or its error (the JSON-RPC error message, or the tool error's text), and the time."""

    async def main() -> list[tuple[str, str, float]]:
        out = []
        async with _client(url, token, mode, **callbacks) as client:
            assert client.protocol_version == (MODERN if mode == MODERN else "2025-11-25")
            for name, arguments in calls:
                started = time.monotonic()
                try:
                    result = await client.call_tool(name, arguments)
                    kind = "error" if result.is_error else "ok"
                    out.append((kind, _text(result), time.monotonic() - started))
                except MCPError as exc:
                    out.append(
                        ("error", f"{exc.error.code}: {exc.error.message}", time.monotonic() - started)
                    )
        return out

    return anyio.run(main)


ASKING = [
    ("mo__greet_me", {}),
    ("mo__visit", {}),
    ("mo__summarize", {"text": "a long story"}),
]


# -- 1. and 2.: a modern upstream asks, for a modern and for a legacy client -----------------------------------
@pytest.mark.parametrize("mode", [MODERN, "legacy"])
def test_a_modern_upstreams_questions_reach_the_client_and_its_answers_the_upstream(
    stack: Stack, mode: str
) -> None:
    out = _calls(
        stack.url, stack.tokens[0], mode, ASKING, elicitation_callback=_elicit, sampling_callback=_sample
    )
    assert [(kind, text) for kind, text, _ in out] == [
        ("ok", "hello Ada"),
        ("ok", "Ada lives in Paris (Where does Ada live?)"),  # two rounds: the second names the first answer
        ("ok", "summary: short (20)"),  # "Sum up: a long story", sampled by the client
    ]


@pytest.mark.parametrize("mode", [MODERN, "legacy"])
def test_without_the_capability_a_modern_upstreams_question_fails_at_once(stack: Stack, mode: str) -> None:
    # Elicitation declared, sampling not: the first works, the second fails at once, naming sampling.
    out = _calls(stack.url, stack.tokens[1], mode, [ASKING[0], ASKING[2]], elicitation_callback=_elicit)
    assert out[0][:2] == ("ok", "hello Ada")
    kind, text, elapsed = out[1]
    assert kind == "error" and "sampling" in text, text
    assert elapsed < 5  # the server's timeout is 20 s: nothing waited for it
    bare = _calls(stack.url, stack.tokens[1], mode, [ASKING[0]])  # no callbacks: no capabilities
    assert bare[0][0] == "error" and "elicitation" in bare[0][1] and bare[0][2] < 5
    if mode == MODERN:
        assert text.startswith("-32021: ") and bare[0][1].startswith(
            "-32021: "
        )  # MissingRequiredClientCapability


# -- 3.: a legacy upstream asks a modern client ----------------------------------------------------------------
LEGACY_ASKING = [
    ("py__ask_name", {}),  # elicitation on the call's own stream
    ("py__ask_llm", {"prompt": "the meaning of life"}),  # sampling on the call's stream
    ("py__ask_llm", {"prompt": "once more", "standalone": True}),  # sampling on the upstream's GET stream
    ("ev__trigger-elicitation-request", {}),
    ("ev__trigger-sampling-request", {"prompt": "life"}),
]


def test_a_legacy_upstreams_requests_reach_a_modern_client_as_input_required(stack: Stack) -> None:
    out = _calls(
        stack.url,
        stack.tokens[2],
        MODERN,
        LEGACY_ASKING,
        elicitation_callback=_elicit,
        sampling_callback=_sample,
    )
    kinds = [kind for kind, _, _ in out]
    texts = [text for _, text, _ in out]
    assert kinds == ["ok"] * 5, texts
    assert texts[0] == "hello Ada"
    assert texts[1] == "model said: short (19)"
    assert texts[2] == "model said: short (9)"
    assert "User provided the requested information" in texts[3] and "Name: Ada" in texts[3]
    assert "LLM sampling result" in texts[4] and '"text": "short (' in texts[4]


def test_without_the_capability_a_legacy_upstreams_request_fails_at_once(stack: Stack) -> None:
    # Elicitation declared, sampling not: the elicitation is asked, the sampling refused at once.
    asking = [LEGACY_ASKING[0], LEGACY_ASKING[1], LEGACY_ASKING[4]]
    out = _calls(stack.url, stack.tokens[1], MODERN, asking, elicitation_callback=_elicit)
    assert out[0][:2] == ("ok", "hello Ada")
    for kind, text, elapsed in out[1:]:
        assert kind == "error" and "did not declare the sampling capability" in text, text
        assert elapsed < 5  # the servers' timeouts are 20 s (py) and 60 s (ev): nothing waited for them


# -- raw 2026-07-28 requests: what is on the wire ------------------------------------------------------------------
def _envelope(capabilities: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": capabilities if capabilities is not None else {},
    }


def request(
    port: int,
    slug: str,
    token: str,
    method: str,
    params: dict[str, Any],
    request_id: int = 1,
    *,
    accept: str = "application/json",
    session: str | None = None,
) -> tuple[int, http.client.HTTPResponse, bytes]:
    """A raw request, 2026-07-28 when ``params`` has a ``_meta`` (else legacy, in ``session``): its status,
    response (for its headers) and body."""
    message = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
    modern_era = "_meta" in params
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Accept": accept}
    if modern_era or session is not None:
        headers["MCP-Protocol-Version"] = MODERN if modern_era else "2025-11-25"
    if modern_era:
        headers["Mcp-Method"] = method
        headers["Mcp-Name"] = str(params.get("name", params.get("uri", "")))
    if session is not None:
        headers["Mcp-Session-Id"] = session
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", f"/ws/{slug}", body=json.dumps(message), headers=headers)
        response = connection.getresponse()
        return response.status, response, response.read()
    finally:
        connection.close()


def call(
    port: int, slug: str, token: str, name: str, extra: dict[str, Any] | None = None, request_id: int = 1
) -> tuple[int, dict[str, Any]]:
    """A raw 2026-07-28 tools/call (JSON reply); its status and body."""
    params = {"name": name, "arguments": {}, "_meta": _envelope({"elicitation": {}}), **(extra or {})}
    status, _, body = request(port, slug, token, "tools/call", params, request_id)
    return status, json.loads(body)


def answer(result: dict[str, Any], content: dict[str, Any]) -> dict[str, Any]:
    """The retry's extra params: the one input request answered with ``content``."""
    (key,) = result["inputRequests"]
    return {
        "inputResponses": {key: {"action": "accept", "content": content}},
        "requestState": result["requestState"],
    }


@pytest.mark.parametrize("tool", ["mo__greet_me", "py__ask_name"])
def test_the_request_state_is_opaque_and_bound_to_its_token_workspace_and_tool(
    stack: Stack, tool: str
) -> None:
    port, token = stack.gateway.port, stack.tokens[3]
    status, first = call(port, stack.slug, token, tool)
    assert status == 200, first
    result = first["result"]
    assert result["resultType"] == "input_required"
    (request,) = result["inputRequests"].values()
    assert request["method"] == "elicitation/create" and request["params"]["message"] == "What is your name?"
    state = result["requestState"]
    # Encrypted, not merely signed: neither the gateway's fields nor the upstream's own state can be read.
    assert b"workspace" not in base64.urlsafe_b64decode(state + "==") and "{" not in state
    refusals = {
        "forged": call(port, stack.slug, token, tool, {"requestState": "made-up"}),
        "altered": call(port, stack.slug, token, tool, {"requestState": state[:-4] + "AAAA"}),
        "another tool": call(port, stack.slug, token, "mo__visit", {"requestState": state}),
        "another token": call(port, stack.slug, stack.tokens[0], tool, {"requestState": state}),
        "another workspace": call(port, stack.other, stack.foreign, "mo__greet_me", {"requestState": state}),
        "not a string": call(port, stack.slug, token, tool, {"requestState": 7}),
        "bad responses": call(
            port, stack.slug, token, tool, {"inputResponses": ["x"], "requestState": state}
        ),
    }
    for why, (status, body) in refusals.items():
        assert status == 400, (why, body)
        message = body["error"]["message"]
        assert body["error"]["code"] == -32602 and ("requestState" in message or "inputResponses" in message)
        assert "Traceback" not in json.dumps(body)
    # None of that used up the round: the genuine retry still gets the upstream's result.
    status, final = call(port, stack.slug, token, tool, answer(result, {"name": "Grace"}), request_id=2)
    assert status == 200 and final["id"] == 2, final
    assert final["result"]["resultType"] == "complete"
    assert final["result"]["content"][0]["text"] == "hello Grace"


def test_a_held_call_waits_for_the_retry_only_until_its_timeout(stack: Stack) -> None:
    """quick__ask_name's server has a 3 s timeout: a client that never retries costs the upstream call no
    more than that; the upstream's request is answered with an error and a late retry is told the round is
    over (400, -32602), at once."""
    port, token = stack.gateway.port, stack.tokens[3]
    status, first = call(port, stack.slug, token, "quick__ask_name")
    assert status == 200 and first["result"]["resultType"] == "input_required"
    time.sleep(4.5)
    started = time.monotonic()
    status, late = call(port, stack.slug, token, "quick__ask_name", answer(first["result"], {"name": "Late"}))
    assert time.monotonic() - started < 2
    assert status == 400 and late["error"]["code"] == -32602 and "round is over" in late["error"]["message"]
    # The call ended and gave its in-flight slot back: the same tool works again right away.
    status, again = call(port, stack.slug, token, "quick__ask_name", request_id=3)
    assert status == 200 and again["result"]["resultType"] == "input_required"
    status, done = call(port, stack.slug, token, "quick__ask_name", answer(again["result"], {"name": "Bo"}))
    assert status == 200 and done["result"]["content"][0]["text"] == "hello Bo"
    rows = stack.gateway.manage(
        "shell",
        "-c",
        "from gateway.models import UsageEvent\n"
        "print([(e.outcome, e.detail) for e in UsageEvent.objects.filter(server_slug='quick').order_by('pk')])",
    )
    assert "('timeout', 'the client did not answer elicitation/create in time')" in rows
    assert "('ok', '')" in rows


# -- prompts/get and resources/read that ask for input (a modern upstream's prompt and resource template) ------
INTRODUCE = "mo__introduce"  # the prompt, exposed as <server>__<prompt>
LETTER = "aerostack://mo/letters://spring"  # the resource, in the gateway's URI scheme


def _features(url: str, token: str, mode: str, server: str = "mo", **callbacks: Any) -> list[tuple[str, str]]:
    """The text of ``<server>__introduce`` and of ``aerostack://<server>/letters://spring`` (or the JSON-RPC
    error) through the SDK client."""
    prompt_name, letter = f"{server}__introduce", f"aerostack://{server}/letters://spring"

    async def main() -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        async with _client(url, token, mode, **callbacks) as client:
            assert client.protocol_version == (MODERN if mode == MODERN else "2025-11-25")
            try:
                prompt = await client.get_prompt(prompt_name)
                content = prompt.messages[0].content
                out.append(("ok", content.text if isinstance(content, types.TextContent) else "?"))
            except MCPError as exc:
                out.append(("error", f"{exc.error.code}: {exc.error.message}"))
            try:
                read = await client.read_resource(letter)
                (item,) = read.contents
                assert item.uri == letter  # the contents name the URI the client knows
                out.append(("ok", item.text if isinstance(item, types.TextResourceContents) else "?"))
            except MCPError as exc:
                out.append(("error", f"{exc.error.code}: {exc.error.message}"))
        return out

    return anyio.run(main)


@pytest.mark.parametrize("mode", [MODERN, "legacy"])
def test_a_modern_upstreams_prompt_and_resource_ask_the_client_and_get_its_answers(
    stack: Stack, mode: str
) -> None:
    out = _features(stack.url, stack.tokens[0], mode, elicitation_callback=_elicit, sampling_callback=_sample)
    assert out == [
        ("ok", "Introduce Ada to the team."),  # elicited; the prompt's own requestState came back to it
        ("ok", "A letter about spring: short (18)"),  # "Write about spring", sampled by the client
    ]


@pytest.mark.parametrize("mode", [MODERN, "legacy"])
def test_without_the_capability_a_prompt_or_resource_that_asks_fails_at_once(stack: Stack, mode: str) -> None:
    started = time.monotonic()
    out = _features(stack.url, stack.tokens[1], mode, elicitation_callback=_elicit)  # no sampling
    bare = _features(stack.url, stack.tokens[1], mode)  # no capabilities at all
    assert time.monotonic() - started < 10  # the server's timeout is 20 s: nothing waited for it
    assert out[0] == ("ok", "Introduce Ada to the team.")
    code = "-32021" if mode == MODERN else "-32000"  # MissingRequiredClientCapability in 2026-07-28
    assert out[1][0] == "error" and out[1][1].startswith(f"{code}: ") and "sampling" in out[1][1], out
    assert bare[0][0] == "error" and bare[0][1].startswith(f"{code}: ") and "elicitation" in bare[0][1], bare


def test_a_legacy_upstreams_prompt_and_resource_ask_a_modern_client_as_input_required(stack: Stack) -> None:
    # The SDK server in its legacy era: ctx.elicit / create_message on the request's own reply stream.
    out = _features(
        stack.url, stack.tokens[2], MODERN, "py", elicitation_callback=_elicit, sampling_callback=_sample
    )
    assert out == [("ok", "Introduce Ada to the team."), ("ok", "A letter about spring: short (18)")]


def test_without_the_capability_a_legacy_upstreams_request_on_a_prompt_fails_at_once(stack: Stack) -> None:
    started = time.monotonic()
    out = _features(stack.url, stack.tokens[1], MODERN, "py", elicitation_callback=_elicit)  # no sampling
    assert time.monotonic() - started < 10  # the server's timeout is 20 s: nothing waited for it
    assert out[0] == ("ok", "Introduce Ada to the team.")
    assert out[1][0] == "error" and "did not declare the sampling capability" in out[1][1], out


def test_a_legacy_upstreams_prompt_and_resource_ask_a_legacy_client_on_the_reply_stream(stack: Stack) -> None:
    # Both legacy: the upstream's elicitation and sampling are relayed on the reply (then SSE), as for a tool.
    out = _features(
        stack.url, stack.tokens[2], "legacy", "py", elicitation_callback=_elicit, sampling_callback=_sample
    )
    assert out == [("ok", "Introduce Ada to the team."), ("ok", "A letter about spring: short (18)")]
    rows = stack.gateway.manage(
        "shell",
        "-c",
        "from gateway.models import UsageEvent\n"
        "print(sorted({(e.method, e.outcome, e.tool) for e in UsageEvent.objects.filter(server_slug='py',"
        " method__in=['prompts/get', 'resources/read'])}))",
    )
    assert "('prompts/get', 'ok', 'introduce')" in rows, rows  # one row per request, as for a tools/call


def test_without_the_capability_a_legacy_upstreams_request_to_a_legacy_client_fails_at_once(
    stack: Stack,
) -> None:
    started = time.monotonic()
    out = _features(stack.url, stack.tokens[1], "legacy", "py", elicitation_callback=_elicit)  # no sampling
    bare = _features(stack.url, stack.tokens[1], "legacy", "py")  # no capabilities at all
    assert time.monotonic() - started < 10  # the server's timeout is 20 s: nothing waited for it
    assert out[0] == ("ok", "Introduce Ada to the team.")
    assert out[1][0] == "error" and "did not declare the sampling capability" in out[1][1], out
    assert bare[0][0] == "error" and "did not declare the elicitation capability" in bare[0][1], bare


def test_a_held_prompts_request_state_is_bound_to_its_name(stack: Stack) -> None:
    port, token = stack.gateway.port, stack.tokens[3]
    status, first = modern(port, stack.slug, token, "prompts/get", {"name": "py__introduce"})
    assert status == 200 and first["result"]["resultType"] == "input_required", first
    ((key, asked),) = first["result"]["inputRequests"].items()
    assert asked["method"] == "elicitation/create" and asked["params"]["message"] == "What is your name?"
    state = first["result"]["requestState"]
    for method, params in [
        ("prompts/get", {"name": "py__greet", "arguments": {"name": "x"}, "requestState": state}),
        ("tools/call", {"name": "py__ask_name", "arguments": {}, "requestState": state}),
        ("prompts/get", {"name": "py__introduce", "requestState": state[:-4] + "AAAA"}),
    ]:
        status, body = modern(port, stack.slug, token, method, params)
        assert status == 400 and body["error"]["code"] == -32602, body
    answer = {"action": "accept", "content": {"name": "Grace"}}
    retry = {"name": "py__introduce", "inputResponses": {key: answer}, "requestState": state}
    status, done = modern(port, stack.slug, token, "prompts/get", retry, request_id=2)
    assert status == 200 and done["id"] == 2, done
    assert done["result"]["messages"][0]["content"]["text"] == "Introduce Grace to the team."
    status, again = modern(port, stack.slug, token, "prompts/get", retry, request_id=3)  # the round is over
    assert status == 400 and "round is over" in again["error"]["message"], again


def modern(port: int, slug: str, token: str, method: str, params: dict[str, Any], request_id: int = 1) -> Any:
    capabilities = {"elicitation": {}, "sampling": {}}
    status, _, body = request(
        port, slug, token, method, {**params, "_meta": _envelope(capabilities)}, request_id
    )
    return status, json.loads(body)


def test_a_prompts_or_resources_request_state_is_bound_to_its_token_workspace_and_name(stack: Stack) -> None:
    port, token = stack.gateway.port, stack.tokens[3]
    status, first = modern(port, stack.slug, token, "prompts/get", {"name": INTRODUCE})
    assert status == 200, first
    prompt = first["result"]
    assert prompt["resultType"] == "input_required" and "ttlMs" not in prompt
    assert prompt["inputRequests"]["name"]["method"] == "elicitation/create"
    state = prompt["requestState"]
    assert "introduce" not in base64.urlsafe_b64decode(state + "==").decode(
        "latin-1"
    )  # the upstream's, sealed
    status, read = modern(port, stack.slug, token, "resources/read", {"uri": LETTER})
    assert status == 200 and read["result"]["resultType"] == "input_required", read
    resource_state = read["result"]["requestState"]
    status, tool = call(port, stack.slug, token, "mo__greet_me")
    tool_state = tool["result"]["requestState"]
    other_letter = "aerostack://mo/letters://autumn"
    refusals = {
        "forged": ("prompts/get", {"name": INTRODUCE, "requestState": "made-up"}),
        "altered": ("prompts/get", {"name": INTRODUCE, "requestState": state[:-4] + "AAAA"}),
        "a tool's": ("prompts/get", {"name": INTRODUCE, "requestState": tool_state}),
        "a prompt's for a tool": ("tools/call", {"name": "mo__greet_me", "requestState": state}),
        "a prompt's for a resource": ("resources/read", {"uri": LETTER, "requestState": state}),
        "another resource": ("resources/read", {"uri": other_letter, "requestState": resource_state}),
        "another prompt": ("prompts/get", {"name": "mo__greet", "requestState": state}),
        "another token": ("prompts/get", {"name": INTRODUCE, "requestState": state}),
        "bad responses": ("prompts/get", {"name": INTRODUCE, "requestState": state, "inputResponses": [1]}),
    }
    for why, (method, params) in refusals.items():
        who = stack.tokens[0] if why == "another token" else token
        status, body = modern(port, stack.slug, who, method, params)
        assert status == 400, (why, body)
        message = body["error"]["message"]
        assert body["error"]["code"] == -32602 and ("requestState" in message or "inputResponses" in message)
    status, body = modern(
        port, stack.other, stack.foreign, "prompts/get", {"name": INTRODUCE, "requestState": state}
    )
    assert status == 400 and body["error"]["code"] == -32602, body
    # None of that used anything up: the genuine retries get the upstream's results.
    answer = {"action": "accept", "content": {"name": "Grace"}}
    retry = {"name": INTRODUCE, "inputResponses": {"name": answer}, "requestState": state}
    status, done = modern(port, stack.slug, token, "prompts/get", retry, request_id=2)
    assert status == 200 and done["id"] == 2, done
    assert done["result"]["resultType"] == "complete"
    assert done["result"]["messages"][0]["content"]["text"] == "Introduce Grace to the team."
    sampled = {"role": "assistant", "content": {"type": "text", "text": "dear"}, "model": "m"}
    retry = {"uri": LETTER, "inputResponses": {"draft": sampled}, "requestState": resource_state}
    status, done = modern(port, stack.slug, token, "resources/read", retry, request_id=3)
    assert status == 200, done
    assert done["result"]["contents"] == [
        {"uri": LETTER, "mimeType": "text/plain", "text": "A letter about spring: dear"}
    ]


def test_a_legacy_client_that_takes_only_json_is_told_at_once_why_it_cannot_be_asked(stack: Stack) -> None:
    port, token = stack.gateway.port, stack.tokens[3]
    init = {
        "protocolVersion": "2025-11-25",
        "capabilities": {"elicitation": {}},
        "clientInfo": {"name": "raw", "version": "1"},
    }
    accept = "application/json, text/event-stream"
    status, response, _ = request(port, stack.slug, token, "initialize", init, 0, accept=accept)
    session = response.getheader("Mcp-Session-Id")
    assert status == 200 and session
    status, response, raw = request(
        port, stack.slug, token, "prompts/get", {"name": INTRODUCE}, session=session
    )
    body = json.loads(raw)
    assert status == 200 and body["error"]["code"] == -32000, body
    assert "accepts only JSON replies" in body["error"]["message"]
