"""What the held-call path (gateway/inputreq.py) costs a 2026-07-28 client's call that asks nothing.

Run with ``.venv/bin/python -m benchmarks.held_call [--calls N] [--batches B]``. A 2026-07-28 client that
declares sampling, elicitation or roots has its calls on a legacy upstream read in a thread of its own
(``inputreq.Feed``), so that the call can be held open while the upstream asks it something. This starts the
Python SDK server (tests/e2e/py_upstream.py) and Aerostack under gunicorn on 127.0.0.1, then times
sequential raw ``tools/call py__add`` requests on one keep-alive connection, in alternating batches without
capabilities (the plain path) and with ``elicitation`` declared (the held-call path). A figure is reported,
never an exit status; everything is stopped before the end.
"""

from __future__ import annotations

import argparse
import http.client
import importlib
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from tests.live import live_server

# Imported by name so that mypy does not follow it (tests/ is outside the strict type check), as
# benchmarks.gateway does.
start_python_upstream: Callable[..., Any] = importlib.import_module(
    "tests.e2e.upstreams"
).start_python_upstream

SETUP = """
import json
from django.contrib.auth.models import User
from workspaces.services import workspace_create
from gateway.services import server_create
from tokens.services import token_create
owner = User.objects.create_user(username="o@example.com", password="x-long-password-1")
ws = workspace_create(name="Bench", owner=owner)
server_create(workspace=ws, actor=owner, name="Python", slug="py", url="{python}", timeout_seconds=20)
t = token_create(workspace=ws, holder=ws.members.get(), name="b", expires_in=None, created_by=owner).raw
print(json.dumps({{"slug": ws.slug, "token": t}}))
"""


def timed_calls(port: int, slug: str, token: str, capabilities: dict[str, object], calls: int) -> list[float]:
    """Milliseconds per call of ``calls`` sequential 2026-07-28 calls declaring ``capabilities``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Accept": "application/json",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "py__add",
    }
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": capabilities,
    }
    times = []
    try:
        for n in range(calls):
            params = {"name": "py__add", "arguments": {"a": n, "b": 1}, "_meta": meta}
            body = json.dumps({"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": params})
            started = time.perf_counter()
            connection.request("POST", f"/ws/{slug}", body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            times.append((time.perf_counter() - started) * 1000)
            if response.status != 200 or f'"{n + 1}"'.encode() not in data:
                raise RuntimeError(f"unexpected answer: {response.status} {data[:200]!r}")
    finally:
        connection.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=40, help="calls per batch")
    parser.add_argument("--batches", type=int, default=5, help="batches of each kind, alternating")
    args = parser.parse_args()
    upstream = start_python_upstream()
    try:
        env = {"ALLOW_PRIVATE_UPSTREAMS": "true", "GATEWAY_RATE_LIMIT": "1000000"}
        with live_server(workers=1, threads=8, extra_env=env) as gateway:
            script = SETUP.format(python=upstream.url)
            data = json.loads(gateway.manage("shell", "-c", script).strip().splitlines()[-1])
            slug, token = data["slug"], data["token"]
            plain: list[float] = []
            held: list[float] = []
            timed_calls(gateway.port, slug, token, {"elicitation": {}}, 20)  # warm both paths
            timed_calls(gateway.port, slug, token, {}, 20)
            for _ in range(args.batches):
                plain += timed_calls(gateway.port, slug, token, {}, args.calls)
                held += timed_calls(gateway.port, slug, token, {"elicitation": {}}, args.calls)
        load = os.getloadavg()[0]
        print(
            f"{len(plain)} calls each, load {load:.1f}: median {statistics.median(plain):.2f} ms without "
            f"capabilities, {statistics.median(held):.2f} ms with elicitation declared (held-call path)"
        )
    finally:
        upstream.stop()


if __name__ == "__main__":
    main()
