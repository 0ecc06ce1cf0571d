"""Two nodes on PostgreSQL + Redis: each round of a multi round-trip request (2026-07-28 ``input_required``) may
land on either node (gateway/inputreq.py). A held legacy upstream call waits on the node that started it and
gets the answers of a retry served by the other (``input:<round>`` / ``input-reply:<id>`` on the bus); a
modern upstream's wrapped ``requestState`` opens on every node; a legacy client's answer to a modern
upstream's question may be posted to the other node (``reply:<relay id>``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import need
from tests.e2e.test_gateway_e2e import Raw
from tests.e2e.test_input_required_e2e import answer, call
from tests.e2e.test_s2c_e2e import initialize_with, open_call, sse_messages
from tests.e2e.test_scale_out import DATABASE_URL, REDIS_URL, Cluster, _services_reachable
from tests.e2e.upstreams import start_modern_upstream
from tests.live import live_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.services]

SETUP = """
import json
from django.contrib.auth.models import User
from workspaces.services import workspace_create
from gateway.services import server_create
from tokens.services import token_create
owner = User.objects.create_user(username="owner@example.com", password="a-long-password-1")
ws = workspace_create(name="Rounds Team", owner=owner)
member = ws.members.get()
server_create(workspace=ws, actor=owner, name="Python", slug="py", url="{python}", timeout_seconds=20)
server_create(workspace=ws, actor=owner, name="Modern", slug="mo", url="{modern}", timeout_seconds=20)
tokens = [token_create(workspace=ws, holder=member, name=f"t{{i}}", expires_in=None, created_by=owner).raw for i in range(3)]
print(json.dumps({{"slug": ws.slug, "tokens": tokens}}))
"""


@pytest.fixture(scope="module")
def cluster(py_upstream: Any) -> Iterator[Cluster]:
    need(
        _services_reachable(),
        f"PostgreSQL ({DATABASE_URL}) and Redis ({REDIS_URL}) are needed for the scale-out tests",
    )
    modern = start_modern_upstream()
    env = {"DATABASE_URL": DATABASE_URL, "REDIS_URL": REDIS_URL, "ALLOW_PRIVATE_UPSTREAMS": "true"}
    try:
        with live_cluster(2, extra_env=env) as (a, b):
            script = SETUP.format(python=py_upstream.url, modern=modern.url)
            data = json.loads(a.manage("shell", "-c", script).strip().splitlines()[-1])
            yield Cluster(a, b, data["slug"], data["tokens"])
    finally:
        modern.stop()


def test_a_held_legacy_call_gets_the_answer_of_a_retry_served_by_the_other_node(cluster: Cluster) -> None:
    token = cluster.tokens[0]
    status, first = call(cluster.a.port, cluster.slug, token, "py__ask_name")
    assert status == 200 and first["result"]["resultType"] == "input_required", first
    # Node B has never seen the call: the answers reach node A, which holds the upstream call, over the bus.
    status, final = call(
        cluster.b.port, cluster.slug, token, "py__ask_name", answer(first["result"], {"name": "Grace"})
    )
    assert status == 200, final
    assert final["result"]["content"][0]["text"] == "hello Grace"
    # The round is over on every node: the same state again is refused at once.
    status, again = call(
        cluster.a.port, cluster.slug, token, "py__ask_name", answer(first["result"], {"name": "X"})
    )
    assert status == 400 and again["error"]["code"] == -32602


def test_each_round_of_a_modern_upstream_may_land_on_either_node(cluster: Cluster) -> None:
    token = cluster.tokens[1]
    status, first = call(cluster.a.port, cluster.slug, token, "mo__visit")
    assert status == 200 and first["result"]["resultType"] == "input_required", first
    status, second = call(
        cluster.b.port, cluster.slug, token, "mo__visit", answer(first["result"], {"name": "Ada"})
    )
    assert status == 200 and second["result"]["resultType"] == "input_required", second
    (request,) = second["result"]["inputRequests"].values()
    assert request["params"]["message"] == "Where does Ada live?"
    status, final = call(
        cluster.a.port, cluster.slug, token, "mo__visit", answer(second["result"], {"city": "Oslo"})
    )
    assert status == 200 and final["result"]["content"][0]["text"] == "Ada lives in Oslo", final


def test_a_legacy_clients_answer_to_a_modern_upstream_may_go_to_the_other_node(cluster: Cluster) -> None:
    on_a = Raw(cluster.a.port, cluster.slug, cluster.tokens[2])
    initialize_with(on_a, {"elicitation": {}})
    response = open_call(
        cluster.a.port,
        on_a,
        {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "mo__greet_me"}},
    )
    assert response.status == 200
    messages = sse_messages(response)
    request = next(messages)
    assert request["method"] == "elicitation/create" and request["id"].startswith("aerostack-relay-")
    reply = {
        "jsonrpc": "2.0",
        "id": request["id"],
        "result": {"action": "accept", "content": {"name": "Lin"}},
    }
    assert on_a.on(cluster.b.port).post(reply)[0] == 202
    final = list(messages)[-1]
    response.close()
    assert final["id"] == 5 and final["result"]["content"][0]["text"] == "hello Lin", final
