"""Resources, resource templates, prompts and completion end to end: a real gunicorn-served Aerostack in front
of server-everything (npm) and the official Python SDK server, used by the official MCP Python SDK client
(auto and legacy modes) and by the MCP Inspector CLI (npm, pinned in tests/e2e/package.json), all on
127.0.0.1 and started by the tests themselves."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import types
from mcp.types import PromptReference, ResourceTemplateReference

from gateway import protocol
from tests.conftest import need
from tests.e2e.clients import sdk_client
from tests.e2e.upstreams import (
    E2E_DIR,
    ensure_node_modules,
    node_available,
    start_everything_server,
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
ws = workspace_create(name="Features Team", owner=owner)
member = ws.members.get()
ev = server_create(workspace=ws, actor=owner, name="Everything", slug="ev", url="{everything}")
py = server_create(workspace=ws, actor=owner, name="Python", slug="py", url="{python}", timeout_seconds=20)
token = token_create(workspace=ws, holder=member, name="all", expires_in=None, created_by=owner).raw
scoped = token_create(
    workspace=ws, holder=member, name="py only", expires_in=None, created_by=owner, scopes={{py.pk: None}}
).raw
print(json.dumps({{"slug": ws.slug, "token": token, "scoped": scoped}}))
"""
INSPECTOR = E2E_DIR / "node_modules" / ".bin" / "mcp-inspector"


@dataclass
class Stack:
    gateway: LiveServer
    slug: str
    token: str
    scoped: str

    @property
    def url(self) -> str:
        return f"{self.gateway.url}/ws/{self.slug}"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    need(node_available(), "node is not installed: the end-to-end tests need it for server-everything")
    everything = start_everything_server()
    python = start_python_upstream()
    workers = 2 if os.environ.get("REDIS_URL") else 1
    try:
        with live_server(
            workers=workers, threads=8, extra_env={"ALLOW_PRIVATE_UPSTREAMS": "true"}
        ) as gateway:
            out = gateway.manage("shell", "-c", SETUP.format(everything=everything.url, python=python.url))
            data = json.loads(out.strip().splitlines()[-1])
            yield Stack(gateway, data["slug"], data["token"], data["scoped"])
    finally:
        python.stop()
        everything.stop()


async def _use(url: str, token: str, mode: str) -> dict[str, Any]:
    async with sdk_client(url, token, mode=mode) as client:
        resources = [str(r.uri) for r in (await client.list_resources()).resources]
        templates = [t.uri_template for t in (await client.list_resource_templates()).resource_templates]
        listed = (await client.list_prompts()).prompts
        prompts = [p.name for p in listed]
        out: dict[str, Any] = {"resources": resources, "templates": templates, "prompts": prompts}
        if not any(uri.startswith("aerostack://ev/") for uri in resources):  # a token scoped to py only
            return out
        readme = await client.read_resource("aerostack://py/notes://readme")
        py_template = next(t for t in templates if t.startswith("aerostack://py/"))
        filled = await client.read_resource(py_template.replace("{topic}", "rust"))
        ev_template = next(t for t in templates if t.startswith("aerostack://ev/") and "{" in t)
        ev_filled_uri = ev_template.split("{", 1)[0] + "1"
        ev_filled = await client.read_resource(ev_filled_uri)
        ev_static = next(uri for uri in resources if uri.startswith("aerostack://ev/"))
        ev_read = await client.read_resource(ev_static)
        greet = await client.get_prompt("py__greet", {"name": "Ada"})
        ev_prompt = next(
            p.name
            for p in listed
            if p.name.startswith("ev__") and not any(a.required for a in p.arguments or [])
        )
        ev_got = await client.get_prompt(ev_prompt, {})
        names = await client.complete(PromptReference(name="py__greet"), {"name": "name", "value": "al"})
        topics = await client.complete(
            ResourceTemplateReference(uri=py_template), {"name": "topic", "value": "r"}
        )
        out.update(
            version=client.protocol_version,
            capabilities=client.server_capabilities.model_dump(exclude_none=True)
            if client.server_capabilities
            else {},
            readme=readme.contents[0].text,  # type: ignore[union-attr]
            filled=(str(filled.contents[0].uri), filled.contents[0].text),  # type: ignore[union-attr]
            ev_filled=(ev_filled_uri, str(ev_filled.contents[0].uri)),
            ev_read=(ev_static, str(ev_read.contents[0].uri)),
            greet=greet.messages[0].content.text,  # type: ignore[union-attr]
            ev_prompt=len(ev_got.messages),
            names=names.completion.values,
            topics=topics.completion.values,
        )
        return out


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_the_sdk_client_lists_reads_gets_and_completes_through_the_gateway(stack: Stack, mode: str) -> None:
    out = anyio.run(_use, stack.url, stack.token, mode)
    # auto: the gateway answers server/discover, so the SDK client speaks 2026-07-28 (gateway/modern.py).
    assert out["version"] == ("2026-07-28" if mode == "auto" else "2025-11-25")
    assert "aerostack://py/notes://readme" in out["resources"]
    assert any(uri.startswith("aerostack://ev/demo://") for uri in out["resources"])
    assert [protocol.unwrap_uri(uri) for uri in out["resources"]] == sorted(
        protocol.unwrap_uri(uri)
        for uri in out["resources"]  # type: ignore[type-var]
    )
    assert "aerostack://py/notes://{topic}/summary" in out["templates"]
    assert "py__greet" in out["prompts"] and "py__review_code" in out["prompts"]
    assert all(protocol.TOOL_NAME_PATTERN.fullmatch(name) for name in out["prompts"])
    assert {"resources", "prompts", "completions"} <= set(out["capabilities"])
    # server-everything offers subscriptions: resources/subscribe (legacy), subscriptions/listen (2026-07-28).
    assert out["capabilities"]["resources"]["subscribe"] is True
    assert out["readme"] == "Read me first."
    assert out["filled"] == ("aerostack://py/notes://rust/summary", "Summary of rust.")
    assert out["ev_filled"][1] == out["ev_filled"][0]  # the gateway URI it was read with
    assert out["ev_read"][1] == out["ev_read"][0]
    assert out["greet"] == "Say hello to Ada." and out["ev_prompt"] >= 1
    assert out["names"] == ["alice", "albert"] and out["topics"] == ["rust", "ruby"]


def test_a_token_scoped_to_one_server_sees_only_its_resources_and_prompts(stack: Stack) -> None:
    out = anyio.run(_use, stack.url, stack.scoped, "legacy")
    assert out["resources"] == ["aerostack://py/notes://readme"]
    assert out["templates"] == ["aerostack://py/notes://{topic}/summary"]
    assert all(name.startswith("py__") for name in out["prompts"])


# -- the Inspector CLI ---------------------------------------------------------------------------------------
def _inspector(stack: Stack, tmp_path: Path, *args: str) -> Any:
    ensure_node_modules()
    node = shutil.which("node")
    need(node is not None and INSPECTOR.exists(), "the Inspector CLI is not installed (npm ci in tests/e2e)")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),  # it keeps a catalog of servers under ~/.mcp-inspector
        "MCP_CATALOG_PATH": str(tmp_path / "mcp.json"),
        "NO_COLOR": "1",
    }
    result = subprocess.run(
        [
            str(INSPECTOR),
            "--cli",
            stack.url,
            "--transport",
            "http",
            "--header",
            f"Authorization: Bearer {stack.token}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        cwd=str(tmp_path),
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-2000:])
    return json.loads(result.stdout)


def test_the_inspector_cli_lists_and_reads_resources(stack: Stack, tmp_path: Path) -> None:
    listed = _inspector(stack, tmp_path, "--method", "resources/list")
    uris = [r["uri"] for r in listed["resources"]]
    assert "aerostack://py/notes://readme" in uris and any(u.startswith("aerostack://ev/") for u in uris)
    read = _inspector(
        stack, tmp_path, "--method", "resources/read", "--uri", "aerostack://py/notes://go/summary"
    )
    assert read["contents"][0]["text"] == "Summary of go."
    templates = _inspector(stack, tmp_path, "--method", "resources/templates/list")
    assert "aerostack://py/notes://{topic}/summary" in [
        t["uriTemplate"] for t in templates["resourceTemplates"]
    ]


def test_the_inspector_cli_lists_and_gets_prompts(stack: Stack, tmp_path: Path) -> None:
    listed = _inspector(stack, tmp_path, "--method", "prompts/list")
    assert "py__greet" in [p["name"] for p in listed["prompts"]]
    got = _inspector(
        stack,
        tmp_path,
        "--method",
        "prompts/get",
        "--prompt-name",
        "py__greet",
        "--prompt-args",
        "name=Grace",
    )
    assert got["messages"][0]["content"]["text"] == "Say hello to Grace."


def test_a_subscribed_client_receives_the_upstreams_resource_updates(stack: Stack) -> None:
    """server-everything sends ``notifications/resources/updated`` on its standalone GET stream (every 5 s,
    once its ``toggle-subscriber-updates`` tool is on) for the URIs its session subscribed to: the gateway
    keeps that stream open while it holds a subscription, with no call in flight, and relays each update
    to the subscribed client in the gateway's URI scheme (gateway/standalone.py, gateway/features.py)."""
    uri = "aerostack://ev/demo://resource/static/document/architecture.md"

    async def main() -> list[str]:
        updated: list[str] = []
        arrived = anyio.Event()

        async def on_message(message: Any) -> None:
            message = getattr(message, "root", message)
            if isinstance(message, types.ResourceUpdatedNotification):
                updated.append(str(message.params.uri))
                arrived.set()

        async with sdk_client(stack.url, stack.token, message_handler=on_message) as client:
            await client.subscribe_resource(uri)
            await client.call_tool("ev__toggle-subscriber-updates", {})  # on
            try:
                with anyio.fail_after(20):  # one update at once, then one per 5 s
                    while len(updated) < 2:
                        await arrived.wait()
                        arrived = anyio.Event()
            finally:
                await client.call_tool("ev__toggle-subscriber-updates", {})  # off again
                await client.unsubscribe_resource(uri)
        return updated

    updated = anyio.run(main)
    assert set(updated) == {uri}
