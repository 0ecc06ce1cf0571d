"""A real MCP upstream for the Aerostack e2e tests, built on the official Python SDK (mcp 2.3.0).

Usage:
    python tests/e2e/py_upstream.py PORT [--stateless] [--json-response] [--name NAME] [--path PATH]

Serves streamable HTTP on http://127.0.0.1:PORT/mcp (never on another interface); `--path` serves it
elsewhere instead, e.g. /sk-live-abc123/mcp (a hosted server with its key in the URL).
Stateful (Mcp-Session-Id) and SSE replies by default; `--stateless` drops sessions,
`--json-response` makes request replies `application/json` instead of `text/event-stream`.

Because it binds 127.0.0.1, the SDK turns on its DNS-rebinding protection: a Host header
other than 127.0.0.1:*, localhost:* or [::1]:* gets 421, an Origin other than
http://127.0.0.1:*, http://localhost:*, http://[::1]:* gets 403.

Tools:
    add(a: int, b: int) -> int
    echo(text: str) -> str
    fail(message: str)            raises ToolError -> result with isError true, text == message
    slow(seconds: float) -> "done" sends progress notifications (when the request carries a
                                   progressToken) and log messages while sleeping; prints
                                   "slow: cancelled" on stderr when it is cancelled
    math.mul(a: int, b: int) -> int  a dotted tool name (the SDK accepts it: SEP-986 allows dots)
    headers() -> str                 the request headers the call arrived with, as JSON
    ask_name() -> str                elicitation/create (form) on the call's own stream
    ask_llm(prompt, standalone=False) -> str
                                     sampling/createMessage, on the call's stream, or with standalone=true
                                     on the session's standalone GET stream (no relatedRequestId)
    log_levels() -> str              one log message at each of debug, info, warning, error
    last_level() -> str              the last level logging/setLevel set on this process ("" if none)
    grow(name: str) -> str           adds a tool `name` and sends tools/list_changed in the call's reply

Resources, templates, prompts, completion:
    notes://readme                   a fixed text resource ("Read me first.")
    notes://{topic}/summary          a template: "Summary of <topic>."
    greet(name)                      a prompt: "Say hello to <name>."
    review.code(language)            a dotted prompt name
    completion/complete              names for greet's `name` (alice, albert, bob) and topics for the template

With --asking, also a prompt and a resource template that ask the client on the request's own stream:
    introduce (prompt)               elicitation/create: "Introduce <name> to the team."
    letters://{topic} (template)     sampling/createMessage: "A letter about <topic>: <reply>"
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

import anyio
from mcp import types
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.types import Completion, PromptReference, ResourceTemplateReference, ToolListChangedNotification
from pydantic import BaseModel

HOST = "127.0.0.1"
PATH = "/mcp"

# ctx.info() & co. are deprecated for 2026-07-28 connections (SEP-2577), still valid for legacy ones.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning)


def build_server(name: str = "aerostack-py-upstream") -> MCPServer:
    server = MCPServer(name, version="1.0.0", instructions="Test upstream for Aerostack e2e tests.")

    @server.tool(description="Add two integers.")
    def add(a: int, b: int) -> int:
        return a + b

    @server.tool(description="Echo the text back.")
    def echo(text: str) -> str:
        return text

    @server.tool(description="Always fails with the given message (isError result).")
    def fail(message: str):  # no return annotation: no outputSchema
        raise ToolError(message)

    @server.tool(description="Sleep for `seconds`, reporting progress and log messages, then return 'done'.")
    async def slow(seconds: float, ctx: Context) -> str:
        steps = 4
        await ctx.info(f"slow: starting, {seconds}s")
        try:
            for step in range(1, steps + 1):
                await anyio.sleep(max(seconds, 0) / steps)
                await ctx.report_progress(step, steps, f"step {step}/{steps}")
                await ctx.info(f"slow: step {step}/{steps}")
        except anyio.get_cancelled_exc_class():
            print("slow: cancelled", file=sys.stderr, flush=True)  # what tests of cancellation look for
            raise
        return "done"

    @server.tool(description="The HTTP request headers this call arrived with (lowercased names), as JSON.")
    def headers(ctx: Context) -> str:
        return json.dumps({k.lower(): v for k, v in (ctx.headers or {}).items()}, sort_keys=True)

    @server.tool(
        description="Add a tool `name` (echoes its text) and announce tools/list_changed in the reply."
    )
    async def grow(name: str, ctx: Context) -> str:
        def grown(text: str) -> str:
            return text

        server.add_tool(grown, name=name, description="Added at run time by grow().")
        # In this call's own stream (request-scoped), where a gateway reading POST replies sees it.
        await ctx.session.send_notification(ToolListChangedNotification(), related_request_id=ctx.request_id)
        return f"added {name}"

    @server.tool(name="math.mul", description="Multiply two integers (dotted tool name).")
    def math_mul(a: int, b: int) -> int:
        return a * b

    @server.resource("notes://readme", name="readme", description="A fixed note.", mime_type="text/plain")
    def readme() -> str:
        return "Read me first."

    @server.resource("notes://{topic}/summary", name="summary", description="A summary of a topic.")
    def summary(topic: str) -> str:
        return f"Summary of {topic}."

    @server.prompt(description="Greet someone.")
    def greet(name: str) -> str:
        return f"Say hello to {name}."

    @server.prompt(name="review.code", description="Review code (dotted prompt name).")
    def review_code(language: str) -> str:
        return f"Review this {language} code."

    @server.completion()
    async def complete(ref, argument, context):  # type: ignore[no-untyped-def]
        if isinstance(ref, PromptReference) and ref.name == "greet" and argument.name == "name":
            return Completion(values=[n for n in ("alice", "albert", "bob") if n.startswith(argument.value)])
        if isinstance(ref, ResourceTemplateReference) and argument.name == "topic":
            return Completion(values=[t for t in ("rust", "ruby", "go") if t.startswith(argument.value)])
        return None

    class Name(BaseModel):
        name: str

    @server.tool(description="Ask the user for a name (elicitation on the call's stream).")
    async def ask_name(ctx: Context) -> str:
        answer = await ctx.elicit("What is your name?", Name)
        if answer.action == "accept" and answer.data is not None:
            return f"hello {answer.data.name}"
        return f"no name: {answer.action}"

    @server.tool(description="Ask the client's model (sampling); standalone: on the GET stream.")
    async def ask_llm(prompt: str, ctx: Context, standalone: bool = False) -> str:
        result = await ctx.session.create_message(
            messages=[
                types.SamplingMessage(role="user", content=types.TextContent(type="text", text=prompt))
            ],
            max_tokens=50,
            related_request_id=None if standalone else ctx.request_id,
        )
        content = result.content
        return (
            f"model said: {content.text}" if isinstance(content, types.TextContent) else "model said nothing"
        )

    @server.tool(description="One log message at each of debug, info, warning and error.")
    async def log_levels(ctx: Context) -> str:
        for level in ("debug", "info", "warning", "error"):
            await ctx.log(level, f"a {level} message", logger_name="levels")
        return "logged"

    levels: list[str] = []

    async def set_level(ctx: object, params: types.SetLevelRequestParams) -> types.EmptyResult:
        levels.append(params.level)
        return types.EmptyResult()

    server._lowlevel_server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_level)

    @server.tool(description="The last level logging/setLevel set in this process.")
    def last_level() -> str:
        return levels[-1] if levels else ""

    return server


def add_asking_features(server: MCPServer) -> None:
    """A prompt and a resource template whose functions ask the client (legacy era: requests on the stream)."""

    class Name(BaseModel):
        name: str

    @server.prompt(description="Introduce the user (asks their name: elicitation).")
    async def introduce(ctx: Context) -> str:
        answer = await ctx.elicit("What is your name?", Name)
        name = answer.data.name if answer.action == "accept" and answer.data is not None else "nobody"
        return f"Introduce {name} to the team."

    @server.resource("letters://{topic}", name="letter", description="A letter the client's model writes.")
    async def letter(topic: str, ctx: Context) -> str:
        message = types.SamplingMessage(
            role="user", content=types.TextContent(type="text", text=f"Write about {topic}")
        )
        result = await ctx.session.create_message(
            messages=[message], max_tokens=50, related_request_id=ctx.request_id
        )
        said = result.content.text if isinstance(result.content, types.TextContent) else "?"
        return f"A letter about {topic}: {said}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("port", type=int)
    parser.add_argument(
        "--stateless", action="store_true", help="no Mcp-Session-Id, fresh transport per request"
    )
    parser.add_argument("--json-response", action="store_true", help="reply application/json instead of SSE")
    parser.add_argument("--name", default="aerostack-py-upstream", help="serverInfo.name")
    parser.add_argument("--path", default=PATH, help="the endpoint's path (default /mcp)")
    parser.add_argument(
        "--asking", action="store_true", help="add a prompt and a template that ask the client"
    )
    args = parser.parse_args(argv)

    server = build_server(args.name)
    if args.asking:
        add_asking_features(server)
    server.run(
        "streamable-http",
        host=HOST,
        port=args.port,
        streamable_http_path=args.path,
        stateless_http=args.stateless,
        json_response=args.json_response,
    )


if __name__ == "__main__":
    main()
