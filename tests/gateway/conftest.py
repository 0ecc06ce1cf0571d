"""Shared helpers of the Servers tab tests: a real MCP upstream and servers made through the services."""

from __future__ import annotations

import html
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode, urlsplit
from urllib.request import urlopen

import pytest
from django.db.models import Model
from django.http import HttpResponse

from gateway.models import Server
from gateway.services import server_create
from tests.e2e.upstreams import RunningUpstream, start_fault_upstream
from tests.live import free_port
from workspaces.models import Member

SECRET = "sk-live-PLAIN-credential-4711"
# Nothing listens there: the test run after an add fails at once instead of reaching the internet.
CLOSED_URL = f"http://127.0.0.1:{free_port()}/mcp"
# What py_upstream.py offers at least (it may grow: tests assert a superset).
UPSTREAM_TOOLS = {"add", "echo", "fail", "slow", "math.mul"}
TOOLS = [
    {"name": "add", "description": "Add two integers."},
    {"name": "echo", "description": "Echo the text back."},
    {"name": "math.mul", "description": "Multiply two integers (dotted tool name)."},
]


@pytest.fixture
def upstream(py_upstream: RunningUpstream) -> RunningUpstream:
    """py_upstream.py on 127.0.0.1 (one for the whole run): tools add, echo, fail, slow, headers, math.mul."""
    return py_upstream


def make_server(member: Member, **fields: Any) -> Server:
    """A server through the real service, so tests see exactly what users get."""
    values: dict[str, Any] = {"name": "GitHub", "slug": "github", "url": "https://mcp.example.com/mcp"}
    values.update(fields)
    return server_create(workspace=member.workspace, actor=member.user, **values)


def with_tools(server: Server, tools: list[dict[str, str]] = TOOLS) -> Server:
    """Pretend a connection test succeeded earlier (for views that only read the snapshot)."""
    Server.objects.filter(pk=server.pk).update(tools_snapshot=tools)
    server.refresh_from_db()
    return server


def form_data(**overrides: Any) -> dict[str, Any]:
    data = {
        "name": "GitHub",
        "slug": "github",
        "url": CLOSED_URL,
        "credential_kind": "none",
        "credential_header": "",
        "credential": "",
        "timeout_seconds": "60",
    }
    data.update(overrides)
    return data


def database_text() -> str:
    """Every stored server, as text: where a plain credential must never show up."""
    return repr(list(Server.objects.values()))


def reload(obj: Model) -> Any:
    return type(obj)._default_manager.get(pk=obj.pk)


def error_beside(response: HttpResponse, field: str) -> str:
    """The error text shown beside ``field`` (templates/partials/field.html); fails when there is none."""
    body = response.content.decode()
    match = re.search(rf'<div class="error" id="id_{field}_error">(.*?)</div>', body, re.S)
    assert match, f"no error beside {field}"
    return html.unescape(re.sub(r"<[^>]+>", "", match.group(1)))


# (field, form overrides, part of the error shown beside the field): shared by the add and edit forms.
BAD_INPUTS = [
    ("name", {"name": ""}, "Give the server a name"),
    ("name", {"name": "   "}, "Give the server a name"),
    ("slug", {"slug": "Bad Slug!"}, "lowercase letters, digits and dashes"),
    ("slug", {"slug": "-github"}, "starting and ending with a letter or digit"),
    ("slug", {"slug": "a" * 33}, "at most 32"),
    ("url", {"url": ""}, "Enter the server's Streamable HTTP URL"),
    ("url", {"url": "ftp://x"}, "Use an http:// or https:// URL."),
    ("url", {"url": "https://user:pw@mcp.example.com/mcp"}, "not in the URL"),
    ("url", {"url": "https://mcp.example.com:port/mcp"}, "Enter a valid URL"),
    ("credential_kind", {"credential_kind": "basic"}, "Select a valid choice"),
    (
        "credential_header",
        {"credential_kind": "header", "credential_header": "", "credential": SECRET},
        "Enter the name of the header",
    ),
    (
        "credential_header",
        {"credential_kind": "header", "credential_header": "Host", "credential": SECRET},
        "Host is set by the gateway itself",
    ),
    (
        "credential_header",
        {"credential_kind": "header", "credential_header": "mcp-session-id", "credential": SECRET},
        "set by the gateway itself",
    ),
    (
        "credential_header",
        {"credential_kind": "header", "credential_header": "X API: Key", "credential": SECRET},
        "valid header name",
    ),
    ("credential", {"credential_kind": "bearer", "credential": ""}, "Enter the credential"),
    ("credential", {"credential_kind": "bearer", "credential": f"{SECRET}\r\nX-Evil: 1"}, "line breaks"),
    ("credential", {"credential_kind": "bearer", "credential": "sk-pasted…"}, "only contain ASCII"),
    ("timeout_seconds", {"timeout_seconds": "0"}, "at least 1 second"),
    ("timeout_seconds", {"timeout_seconds": "601"}, "at most 600 seconds"),
    ("timeout_seconds", {"timeout_seconds": "abc"}, "whole number"),
    ("timeout_seconds", {"timeout_seconds": ""}, "Enter a timeout"),
]


@pytest.fixture(scope="session")
def fault_upstream() -> Iterator[RunningUpstream]:
    """tests/e2e/fault_upstream.py on 127.0.0.1 for the whole run: ``<url>/<mode>/<name>?...`` upstreams that
    hang, answer 500, invalid JSON, cut SSE streams, huge replies... (one process, one path per upstream)."""
    upstream = start_fault_upstream()
    try:
        yield upstream
    finally:
        upstream.stop()


def fault_url(upstream: RunningUpstream, mode: str, **query: object) -> str:
    """The URL of a fresh upstream of ``mode`` (a unique path: its fault counters and sessions are its own)."""
    path = f"{upstream.url}/{mode}/{uuid.uuid4().hex[:12]}"
    return path + ("?" + urlencode(query) if query else "")


def fault_stats(upstream: RunningUpstream, url: str) -> dict[str, int]:
    """How many requests of each method the fault upstream got on ``url``'s path."""
    with urlopen(f"{upstream.url}/stats", timeout=5) as response:  # noqa: S310 (loopback, our own server)
        counts: dict[str, int] = json.loads(response.read())
    path = urlsplit(url).path
    return {key.split(" ", 1)[1]: n for key, n in counts.items() if key.split(" ", 1)[0] == path}
