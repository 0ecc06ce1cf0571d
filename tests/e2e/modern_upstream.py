"""A MODERN-ONLY MCP upstream (2026-07-28) for the Aerostack tests, built on the official Python SDK (mcp 2.3.0).

Usage:
    python tests/e2e/modern_upstream.py PORT [--refuse-listen]

The SDK's server is always dual-era (it routes on ``MCP-Protocol-Version``), so this wraps its real
streamable-HTTP app in a small ASGI gate that refuses everything of the legacy era the way 2026-07-28 tells a
modern-only server to (streamable-http.mdx, "Backward Compatibility"; versioning.mdx): a POST without a modern
``MCP-Protocol-Version`` (so every ``initialize``) gets 400 with an UnsupportedProtocolVersionError naming the
versions it supports; GET and DELETE get 405. Everything else is the SDK's own 2026-07-28 handling:
``server/discover``, the ``_meta`` envelope, ``Mcp-Method`` / ``Mcp-Name`` checks, ``resultType``, ``ttlMs``.

Serves http://127.0.0.1:PORT/mcp only. Tools: those of py_upstream.py (add, echo, fail, slow, headers,
math.mul) plus ``where(region)``, whose ``region`` parameter is mirrored into ``Mcp-Param-Region``
(``x-mcp-header``), and three tools that ask the client through 2026-07-28's multi round-trip requests (an
``input_required`` result, retried with ``inputResponses`` and ``requestState``; the SDK's ``Resolve``):
    greet_me() -> "hello <name>"            one elicitation (form) round
    summarize(text) -> "summary: <reply>"   one sampling/createMessage round
    visit() -> "<name> lives in <city>"     two rounds: the city question names the answer to the first
and a prompt and a resource template that ask the same way (the SDK has no ``Resolve`` for those: their
functions return an ``InputRequiredResult`` themselves and read the retry's ``ctx.input_responses`` and
``ctx.request_state``, the lowest SDK layer that lets them):
    introduce (prompt) -> "Introduce <name> to the team."   one elicitation round, with a requestState
    letters://{topic} (resource template) -> "A letter about <topic>: <reply>"   one sampling round
Also, heard on ``subscriptions/listen`` streams only (its list changes and resource updates):
    announce_tool(name) -> "added <name>"   adds a tool and announces tools/list_changed
    post(text) -> "posted <text>"           changes the resource notes://board and announces its update
    listening() -> int                      how many listen streams are open here
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import uvicorn
from mcp import types
from mcp.server.mcpserver import Context, Elicit, Resolve, Sample
from pydantic import BaseModel, Field

sys.path.insert(0, str(Path(__file__).resolve().parent))
from py_upstream import HOST, PATH, build_server

MODERN = ("2026-07-28",)


def gate(app: Any) -> Any:
    """The ASGI app that lets only 2026-07-28 traffic through to ``app``."""

    async def gated(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        if scope["method"] in ("GET", "DELETE"):
            await _answer(send, 405, None, [(b"allow", b"POST")])
            return
        headers = dict(scope["headers"])
        version = headers.get(b"mcp-protocol-version", b"").decode("latin-1").strip()
        if scope["method"] == "POST" and version not in MODERN:
            body = {
                "jsonrpc": "2.0",
                "id": None,
                "error": {
                    "code": -32022,
                    "message": "Unsupported protocol version: this server speaks only 2026-07-28",
                    "data": {"supported": list(MODERN), "requested": version},
                },
            }
            await _answer(send, 400, body)
            return
        await app(scope, receive, send)

    return gated


def refusing_listen(app: Any) -> Any:
    """``app``, except that ``subscriptions/listen`` is answered 404 + -32601 although discover offers it (a
    proxy in front of the server that does not pass it on): ``--refuse-listen``."""

    async def refusing(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and dict(scope["headers"]).get(b"mcp-method") == b"subscriptions/listen":
            body = {"jsonrpc": "2.0", "id": None, "error": {"code": -32601, "message": "Method not found"}}
            await _answer(send, 404, body)
            return
        await app(scope, receive, send)

    return refusing


async def _answer(send: Any, status: int, body: dict[str, Any] | None, extra: Any = ()) -> None:
    content = b"" if body is None else json.dumps(body).encode("utf-8")
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


class Name(BaseModel):
    name: str


class City(BaseModel):
    city: str


def ask_name() -> Elicit[Name]:
    return Elicit("What is your name?", Name)


def ask_city(who: Annotated[Name, Resolve(ask_name)]) -> Elicit[City]:
    return Elicit(f"Where does {who.name} live?", City)


def ask_model(text: str) -> Sample:
    message = types.SamplingMessage(
        role="user", content=types.TextContent(type="text", text=f"Sum up: {text}")
    )
    return Sample([message], max_tokens=50)


def add_input_tools(server: Any) -> None:
    """The tools that need the client's input (elicitation, sampling) in 2026-07-28 rounds."""

    @server.tool(description="Ask the user's name (elicitation, one input_required round).")
    def greet_me(who: Annotated[Name, Resolve(ask_name)]) -> str:
        return f"hello {who.name}"

    @server.tool(description="Ask the client's model to sum up `text` (sampling, one round).")
    def summarize(text: str, reply: Annotated[types.CreateMessageResult, Resolve(ask_model)]) -> str:
        content = reply.content
        said = content.text if isinstance(content, types.TextContent) else "?"
        return f"summary: {said}"

    @server.tool(description="Ask a name, then that person's city (two input_required rounds).")
    def visit(who: Annotated[Name, Resolve(ask_name)], where: Annotated[City, Resolve(ask_city)]) -> str:
        return f"{who.name} lives in {where.city}"


INTRODUCE_STATE = "introduce:asked-name"  # the prompt's own requestState: the retry must bring it back


def add_input_features(server: Any) -> None:
    """A prompt and a resource template that need the client's input, each in one input_required round."""

    @server.prompt(description="Introduce the user (asks their name: elicitation, one round).")
    def introduce(ctx: Context) -> Any:
        answer = (ctx.input_responses or {}).get("name")
        if isinstance(answer, types.ElicitResult) and ctx.request_state == INTRODUCE_STATE:
            name = (answer.content or {}).get("name", "?") if answer.action == "accept" else "nobody"
            return f"Introduce {name} to the team."
        schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
        question = types.ElicitRequestFormParams(message="What is your name?", requested_schema=schema)
        return types.InputRequiredResult(
            input_requests={"name": types.ElicitRequest(params=question)}, request_state=INTRODUCE_STATE
        )

    @server.resource("letters://{topic}", name="letter", description="A letter the client's model writes.")
    def letter(topic: str, ctx: Context) -> Any:
        reply = (ctx.input_responses or {}).get("draft")
        if isinstance(reply, types.CreateMessageResult):
            content = reply.content
            said = content.text if isinstance(content, types.TextContent) else "?"
            return f"A letter about {topic}: {said}"
        message = types.SamplingMessage(
            role="user", content=types.TextContent(type="text", text=f"Write about {topic}")
        )
        request = types.CreateMessageRequest(
            params=types.CreateMessageRequestParams(messages=[message], max_tokens=50)
        )
        return types.InputRequiredResult(input_requests={"draft": request})


def add_listen_tools(server: Any) -> None:
    """What a 2026-07-28 client hears on its ``subscriptions/listen`` stream (the SDK's bus publishes there;
    there is no other way in this era): a tool list that grows, a resource that changes, and how many listen
    streams are open (the gateway's listener for this upstream is one)."""
    board = {"text": "empty"}

    @server.resource(
        "notes://board", name="board", description="A note post() changes.", mime_type="text/plain"
    )
    def read_board() -> str:
        return board["text"]

    @server.tool(description="Write `text` on notes://board and announce notifications/resources/updated.")
    async def post(text: str, ctx: Context) -> str:
        board["text"] = text
        await ctx.notify_resource_updated("notes://board")
        return f"posted {text}"

    @server.tool(description="Add a tool `name` (echoes its text) and announce tools/list_changed.")
    async def announce_tool(name: str, ctx: Context) -> str:
        def grown(text: str) -> str:
            return text

        server.add_tool(grown, name=name, description="Added at run time by announce_tool().")
        await ctx.notify_tools_changed()
        return f"added {name}"

    @server.tool(description="How many subscriptions/listen streams are open on this server.")
    def listening() -> int:
        return len(server._subscriptions._listeners)  # the SDK's in-memory bus: one listener per stream


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("port", type=int)
    parser.add_argument("--refuse-listen", action="store_true", help="answer subscriptions/listen with 404")
    args = parser.parse_args(argv)
    server = build_server("aerostack-modern-upstream")

    @server.tool(description="Where the call ran: its region (sent as the Mcp-Param-Region header too).")
    def where(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})]) -> str:
        return f"ran in {region}"

    add_input_tools(server)
    add_input_features(server)
    add_listen_tools(server)
    app = server.streamable_http_app(streamable_http_path=PATH, host=HOST)
    served = refusing_listen(gate(app)) if args.refuse_listen else gate(app)
    uvicorn.run(served, host=HOST, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
