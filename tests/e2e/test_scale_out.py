"""Two gunicorn nodes behind no load balancer but the test itself, sharing PostgreSQL and Redis, must behave
exactly like one: same sessions, same rate limits, same revocations, same dashboard log-ins, same catalog."""

from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from tests.conftest import need
from tests.e2e.test_gateway_e2e import Raw, fresh_window
from tests.live import LiveServer, live_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.services]

DATABASE_URL = os.environ.get("DATABASE_URL") or os.environ.get(
    "AEROSTACK_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("REDIS_URL") or os.environ.get(
    "AEROSTACK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"
)

SETUP = """
import json
from django.contrib.auth.models import User
from workspaces.services import workspace_create
from gateway.services import server_create
from tokens.services import token_create
owner = User.objects.create_user(username="owner@example.com", password="a-long-password-1")
ws = workspace_create(name="Scale Team", owner=owner)
member = ws.members.get()
server_create(workspace=ws, actor=owner, name="Python", slug="py", url="{python}")
tokens = [token_create(workspace=ws, holder=member, name=f"t{{i}}", expires_in=None, created_by=owner).raw for i in range(3)]
print(json.dumps({{"slug": ws.slug, "tokens": tokens}}))
"""


def _services_reachable() -> bool:
    try:
        import psycopg
        import redis

        with psycopg.connect(DATABASE_URL, connect_timeout=3):
            pass
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping())
    except Exception:
        return False


@dataclass
class Cluster:
    a: LiveServer
    b: LiveServer
    slug: str
    tokens: list[str]


@pytest.fixture(scope="module")
def cluster(py_upstream: Any) -> Iterator[Cluster]:
    need(
        _services_reachable(),
        f"PostgreSQL ({DATABASE_URL}) and Redis ({REDIS_URL}) are needed for the scale-out tests",
    )
    env = {"DATABASE_URL": DATABASE_URL, "REDIS_URL": REDIS_URL, "ALLOW_PRIVATE_UPSTREAMS": "true"}
    with live_cluster(2, extra_env=env) as (a, b):
        data = json.loads(
            a.manage("shell", "-c", SETUP.format(python=py_upstream.url)).strip().splitlines()[-1]
        )
        yield Cluster(a, b, data["slug"], data["tokens"])


def _raw(cluster: Cluster, node: LiveServer, token: str) -> Raw:
    return Raw(node.port, cluster.slug, token)


def test_a_session_opened_on_one_node_works_on_the_other(cluster: Cluster) -> None:
    on_a = _raw(cluster, cluster.a, cluster.tokens[0])
    on_a.initialize()
    on_b = on_a.on(cluster.b.port)
    status, _, body = on_b.request("tools/call", {"name": "py__add", "arguments": {"a": 2, "b": 3}})
    assert status == 200 and json.loads(body)["result"]["content"][0]["text"] == "5"


def test_the_rate_limit_holds_across_nodes(cluster: Cluster) -> None:
    on_a = _raw(cluster, cluster.a, cluster.tokens[1])
    on_a.initialize()
    remaining = fresh_window(on_a)
    assert 117 <= remaining <= 119
    on_b = on_a.on(cluster.b.port)
    statuses = [(on_a if n % 2 else on_b).request("ping")[0] for n in range(remaining)]  # up to the 120th
    assert statuses == [200] * remaining
    assert on_b.request("ping")[0] == 429 and on_a.request("ping")[0] == 429


def test_a_revocation_is_seen_by_every_node_at_once(cluster: Cluster) -> None:
    on_a = _raw(cluster, cluster.a, cluster.tokens[2])
    on_a.initialize()
    on_b = on_a.on(cluster.b.port)
    assert on_a.request("ping")[0] == 200 and on_b.request("ping")[0] == 200
    cluster.a.manage(
        "shell",
        "-c",
        (
            "from tokens.models import Token; from tokens.services import token_revoke\n"
            "[token_revoke(token=t, actor=None) for t in Token.objects.filter(name='t2')]"
        ),
    )
    assert on_b.request("ping")[0] == 401 and on_a.request("ping")[0] == 401


def test_a_dashboard_login_on_one_node_is_valid_on_the_other(cluster: Cluster) -> None:
    browser = requests.Session()
    browser.trust_env = False
    page = browser.get(f"{cluster.a.url}/accounts/login/", timeout=10)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert csrf
    response = browser.post(
        f"{cluster.a.url}/accounts/login/",
        timeout=10,
        allow_redirects=False,
        data={
            "username": "owner@example.com",
            "password": "a-long-password-1",
            "csrfmiddlewaretoken": csrf.group(1),
        },
        headers={"Referer": f"{cluster.a.url}/accounts/login/"},
    )
    assert response.status_code == 302
    other = browser.get(f"{cluster.b.url}/workspaces/", timeout=10, allow_redirects=False)
    assert other.status_code == 200 and "Scale Team" in other.text


def test_a_tool_switched_off_on_one_node_disappears_on_the_other(cluster: Cluster) -> None:
    on_b = _raw(cluster, cluster.b, cluster.tokens[0])
    on_b.initialize()
    names = [tool["name"] for tool in json.loads(on_b.request("tools/list")[2])["result"]["tools"]]
    assert "py__echo" in names
    cluster.a.manage(
        "shell",
        "-c",
        (
            "from gateway.models import Server; from gateway.services import tool_set_enabled\n"
            "from django.contrib.auth.models import User\n"
            "tool_set_enabled(server=Server.objects.get(slug='py'), actor=User.objects.get(), tool='echo', enabled=False)"
        ),
    )
    names = [tool["name"] for tool in json.loads(on_b.request("tools/list")[2])["result"]["tools"]]
    assert "py__echo" not in names and "py__add" in names


TEAM_SETUP = """
import json
from django.contrib.auth.models import User
from workspaces.services import workspace_create
from tokens.services import token_create
owner = User.objects.get(username="owner@example.com")
ws = workspace_create(name="{name}", owner=owner)
raw = token_create(workspace=ws, holder=ws.members.get(), name="t", expires_in=None, created_by=owner).raw
print(json.dumps({{"slug": ws.slug, "token": raw}}))
"""
AS_OWNER = (
    "from workspaces.models import Member\n"
    "owner = Member.objects.current().get(workspace__slug='{slug}', user__username='owner@example.com')\n"
)


def _team_workspace(cluster: Cluster, name: str) -> tuple[str, str]:
    data = json.loads(cluster.a.manage("shell", "-c", TEAM_SETUP.format(name=name)).strip().splitlines()[-1])
    return data["slug"], data["token"]


def test_a_rate_limit_set_on_one_node_applies_on_the_other_at_once(cluster: Cluster) -> None:
    slug, token = _team_workspace(cluster, "Limited Team")
    on_b = Raw(cluster.b.port, slug, token)
    on_b.initialize()  # 2 requests; the token (with its workspace's limit) is now cached in Redis
    cluster.a.manage(
        "shell",
        "-c",
        AS_OWNER.format(slug=slug)
        + "from workspaces.services import workspace_update\n"
        + "workspace_update(actor=owner, name='Limited Team', description='', rate_limit_per_minute=4)",
    )
    # The policy header shows the limit each request was counted against (a window may turn meanwhile).
    status, headers, _ = on_b.request("ping")
    assert status == 200 and headers["ratelimit-policy"] == '"per-token";q=4;w=60'
    statuses = [on_b.request("ping")[0] for _ in range(4)]
    assert 429 in statuses and statuses.index(429) <= 3


def test_a_deleted_workspaces_tokens_get_401_on_every_node(cluster: Cluster) -> None:
    slug, token = _team_workspace(cluster, "Doomed Team")
    on_a = Raw(cluster.a.port, slug, token)
    on_a.initialize()
    on_b = on_a.on(cluster.b.port)
    assert on_a.request("ping")[0] == 200 and on_b.request("ping")[0] == 200  # cached on both nodes' paths
    cluster.a.manage(
        "shell",
        "-c",
        AS_OWNER.format(slug=slug)
        + "from workspaces.services import workspace_delete\n"
        + "workspace_delete(actor=owner, confirm_name='Doomed Team')",
    )
    assert on_b.request("ping")[0] == 401 and on_a.request("ping")[0] == 401


FAULT_SETUP = """
import json
from django.contrib.auth.models import User
from workspaces.services import workspace_create
from gateway.services import server_create
from tokens.services import token_create
owner = User.objects.get(username="owner@example.com")
ws = workspace_create(name="Collapse Team", owner=owner)
member = ws.members.get()
for n, url in enumerate({urls}):
    server_create(workspace=ws, actor=owner, name=f"s{{n}}", slug=f"s{{n}}", url=url)
print(json.dumps({{"slug": ws.slug, "token": token_create(workspace=ws, holder=member, name="c", expires_in=None, created_by=owner).raw}}))
"""


def test_concurrent_rebuilds_on_both_nodes_ask_each_upstream_once(cluster: Cluster) -> None:
    from tests.e2e.upstreams import start_fault_upstream

    with start_fault_upstream() as upstream:
        urls = [f"{upstream.url}/ok/collapse{n}?tools=3" for n in range(3)]
        data = json.loads(
            cluster.a.manage("shell", "-c", FAULT_SETUP.format(urls=json.dumps(urls)))
            .strip()
            .splitlines()[-1]
        )
        clients = []
        for n in range(8):
            client = Raw((cluster.a if n % 2 else cluster.b).port, data["slug"], data["token"])
            client.initialize()
            clients.append(client)
        barrier = threading.Barrier(len(clients))
        listed: list[int] = []

        def list_tools(client: Raw) -> None:
            barrier.wait()
            status, _, body = client.request("tools/list")
            assert status == 200
            listed.append(len(json.loads(body)["result"]["tools"]))

        threads = [threading.Thread(target=list_tools, args=(client,)) for client in clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert listed == [12] * 8  # 3 upstreams x (echo + 3 tools), on both nodes
        with urllib.request.urlopen(f"{upstream.url}/stats", timeout=5) as response:  # noqa: S310 (loopback)
            stats = json.loads(response.read())
        assert [stats.get(f"/ok/collapse{n} tools/list") for n in range(3)] == [1, 1, 1]


ROTATE = (
    "from tokens.models import Token; from tokens.services import token_rotate\n"
    "from django.contrib.auth.models import User\n"
    "old = Token.objects.get(workspace__slug='{slug}', name='{name}', rotated_from__isnull=True)\n"
    "print(token_rotate(token=old, actor=User.objects.get(username='owner@example.com'), grace_seconds={grace}).raw)"
)


@pytest.mark.parametrize("grace", [0, 4])
def test_a_rotation_is_seen_by_every_node_on_the_next_request(cluster: Cluster, grace: int) -> None:
    """The old token's positive entry is in Redis (cached with no expiry); after the rotation, both nodes
    see its new expiry at once: refused at once with "revoke now", refused once a 4-second grace is over."""
    slug, token = _team_workspace(cluster, f"Rotating Team {grace}")
    on_a = Raw(cluster.a.port, slug, token)
    on_a.initialize()
    on_b = on_a.on(cluster.b.port)
    assert on_a.request("ping")[0] == 200 and on_b.request("ping")[0] == 200  # cached on both
    out = cluster.a.manage("shell", "-c", ROTATE.format(slug=slug, name="t", grace=grace))
    successor = out.strip().splitlines()[-1]
    new_on_b = Raw(cluster.b.port, slug, successor)
    new_on_b.initialize()
    assert new_on_b.request("ping")[0] == 200
    if grace:
        status, headers, _ = on_b.request("ping")  # still inside the grace period
        assert status == 200 and "aerostack-token-expiration" in headers
        time.sleep(grace + 0.2)  # no job runs: the expiry itself ends it
    assert on_b.request("ping")[0] == 401 and on_a.request("ping")[0] == 401
    status, _, body = on_a.request("ping")
    assert status == 401 and json.loads(body)["error"]["message"] == (
        "Token revoked" if not grace else "Token expired"
    )
