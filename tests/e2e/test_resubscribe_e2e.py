"""A resource subscription outlives the upstream's restart: server-everything (npm) is stopped and started
again on the same port, which forgets the gateway's upstream session and with it the subscription; the
gateway re-initializes, subscribes the held URI again on the new session (gateway/standalone.py) and the
client, which did nothing, receives the upstream's ``notifications/resources/updated`` again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
import requests
from mcp import types

from tests.conftest import need
from tests.e2e.clients import sdk_client
from tests.e2e.upstreams import RunningUpstream, node_available, start_everything_server
from tests.live import LiveServer, live_server

pytestmark = pytest.mark.e2e

SETUP = """
import json
from django.contrib.auth.models import User
from workspaces.services import workspace_create
from gateway.services import server_create
from tokens.services import token_create
owner = User.objects.create_user(username="owner@example.com", password="x-long-password-1")
ws = workspace_create(name="Restarts", owner=owner)
from api.services import api_key_create
server = server_create(
    workspace=ws, actor=owner, name="Everything", slug="ev", url="{everything}", timeout_seconds=20
)
token = token_create(workspace=ws, holder=ws.members.get(), name="t", expires_in=None, created_by=owner).raw
key = api_key_create(user=owner, name="tests", expires_in=None).raw
print(json.dumps({{"slug": ws.slug, "token": token, "key": key, "server": server.pk}}))
"""
URI = "aerostack://ev/demo://resource/static/document/architecture.md"


@dataclass
class Stack:
    gateway: LiveServer
    everything: RunningUpstream
    url: str
    token: str
    setup: dict[str, Any]


@pytest.fixture
def stack() -> Iterator[Stack]:
    need(node_available(), "node is not installed: the end-to-end tests need it for server-everything")
    holder = {"everything": start_everything_server()}
    try:
        # One process: the node that subscribed upstream is the one whose reader must subscribe again.
        with live_server(workers=1, threads=8, extra_env={"ALLOW_PRIVATE_UPSTREAMS": "true"}) as gateway:
            out = gateway.manage("shell", "-c", SETUP.format(everything=holder["everything"].url))
            data = json.loads(out.strip().splitlines()[-1])
            stack = Stack(
                gateway, holder["everything"], f"{gateway.url}/ws/{data['slug']}", data["token"], data
            )
            yield stack
            holder["everything"] = stack.everything
    finally:
        holder["everything"].stop()


def test_updates_resume_after_the_upstream_restarts_and_forgets_the_subscription(stack: Stack) -> None:
    async def main() -> tuple[int, int]:
        updated: list[str] = []
        arrived = anyio.Event()

        async def on_message(message: Any) -> None:
            nonlocal arrived
            message = getattr(message, "root", message)
            if isinstance(message, types.ResourceUpdatedNotification):
                updated.append(str(message.params.uri))
                arrived.set()

        async def next_update() -> None:
            nonlocal arrived
            with anyio.fail_after(30):  # server-everything sends one at once, then one per 5 s
                await arrived.wait()
            arrived = anyio.Event()

        async with sdk_client(
            stack.url, stack.token, message_handler=on_message, read_timeout=90.0
        ) as client:
            await client.subscribe_resource(URI)
            await client.call_tool("ev__toggle-subscriber-updates", {})  # on
            await next_update()
            before = len(updated)
            port = stack.everything.port
            stack.everything.stop()  # every session, and the subscription, gone with the process
            stack.everything = await anyio.to_thread.run_sync(lambda: start_everything_server(port=port))
            # Only the updates toggle again (a new process starts with it off); the client never subscribes
            # again. Its call meets the forgotten session first (re-initialized), or after the reader did.
            await client.call_tool("ev__toggle-subscriber-updates", {})
            updated.clear()
            arrived = anyio.Event()
            await next_update()
            await client.call_tool("ev__toggle-subscriber-updates", {})  # off
            await client.unsubscribe_resource(URI)
        return before, len(updated)

    try:
        before, after = anyio.run(main)
    except BaseException:
        print(stack.gateway.log_text()[-6000:])
        print(
            "--- upstream stdout",
            stack.everything.stdout_text()[-3000:],
            stack.everything.stderr_text()[-2000:],
        )
        raise
    assert before >= 1 and after >= 1


def _change_timeout(stack: Stack) -> None:
    """The owner edits the server through the REST API: served by the gateway's own process, whose catalog
    (the embedded cache is per process) learns of the change at once."""
    setup = stack.setup
    response = requests.patch(
        f"{stack.gateway.url}/api/v1/workspaces/{setup['slug']}/servers/{setup['server']}",
        json={"timeout_seconds": 25},
        headers={"Authorization": f"Bearer {setup['key']}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text


def test_updates_go_on_after_the_servers_configuration_changes(stack: Stack) -> None:
    """An owner edits the server (here its timeout): the gateway replaces the pooled upstream session, whose
    end ends its upstream subscriptions, and carries the held URIs over to the new session; the subscribed
    client, which did nothing, goes on receiving updates (it only switches the upstream's updates on again,
    which server-everything keeps per session)."""

    async def main() -> int:
        updated: list[str] = []
        arrived = anyio.Event()

        async def on_message(message: Any) -> None:
            message = getattr(message, "root", message)
            if isinstance(message, types.ResourceUpdatedNotification):
                updated.append(str(message.params.uri))
                arrived.set()

        async with sdk_client(
            stack.url, stack.token, message_handler=on_message, read_timeout=90.0
        ) as client:
            await client.subscribe_resource(URI)
            await client.call_tool("ev__toggle-subscriber-updates", {})  # on
            with anyio.fail_after(30):
                await arrived.wait()
            await anyio.to_thread.run_sync(lambda: _change_timeout(stack))
            # The next request builds the new upstream session (the catalog's config changed).
            await client.call_tool("ev__toggle-subscriber-updates", {})  # on, for the new upstream session
            # The old session's GET stream may still hand over the one update it was reading when it was
            # closed; the updates after that come from the new session's subscription only.
            updated.clear()
            with anyio.fail_after(40):  # server-everything: one at once, then one per 5 s
                while len(updated) < 3:
                    arrived = anyio.Event()
                    await arrived.wait()
            await client.call_tool("ev__toggle-subscriber-updates", {})  # off
            await client.unsubscribe_resource(URI)
        return len(updated)

    try:
        after = anyio.run(main)
    except BaseException:
        print(stack.gateway.log_text()[-6000:])
        raise
    assert after >= 1
