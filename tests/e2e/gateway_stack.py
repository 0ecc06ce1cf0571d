"""A live Aerostack (gunicorn, tests/live.py) with one workspace, the Python SDK upstream as server ``py``
and a member token: the stack the HTTP-level tests (chunked bodies, nginx in front) talk to."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tests.e2e.upstreams import RunningUpstream
from tests.live import LiveServer, live_server

SETUP = """
import json
from django.contrib.auth.models import User
from workspaces.services import workspace_create
from gateway.services import server_create
from tokens.services import token_create
owner = User.objects.create_user(username="owner@example.com", password={password!r})
ws = workspace_create(name="HTTP Team", owner=owner)
member = ws.members.get()
server_create(workspace=ws, actor=owner, name="Python", slug="py", url={python!r}, timeout_seconds=20)
token = token_create(workspace=ws, holder=member, name="t", expires_in=None, created_by=owner).raw
print(json.dumps({{"slug": ws.slug, "token": token}}))
"""
OWNER_EMAIL = "owner@example.com"
# A legacy-era initialize request, as the HTTP-level tests send it.
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}
OWNER_PASSWORD = "a-long-unusual-password-7"


@dataclass
class GatewayStack:
    gateway: LiveServer
    slug: str
    token: str

    @property
    def path(self) -> str:
        return f"/ws/{self.slug}"


@contextmanager
def gateway_stack(python: RunningUpstream, extra_env: dict[str, str] | None = None) -> Iterator[GatewayStack]:
    env = {"ALLOW_PRIVATE_UPSTREAMS": "true", **(extra_env or {})}
    with live_server(workers=1, threads=8, extra_env=env) as gateway:
        out = gateway.manage("shell", "-c", SETUP.format(python=python.url, password=OWNER_PASSWORD))
        data = json.loads(out.strip().splitlines()[-1])
        yield GatewayStack(gateway, data["slug"], data["token"])
