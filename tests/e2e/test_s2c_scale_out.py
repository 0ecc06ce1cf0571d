"""Two nodes on PostgreSQL + Redis: the client's answer to a relayed request may land on the node that does
not hold the upstream exchange (gateway/relay.py, reply:<relay_id> on the bus)."""

from __future__ import annotations

import pytest

from tests.e2e import test_scale_out
from tests.e2e.test_gateway_e2e import Raw
from tests.e2e.test_s2c_e2e import initialize_with, open_call, sse_messages
from tests.e2e.test_scale_out import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.services]
cluster = test_scale_out.cluster  # the same module-scoped two-node cluster (its own instance here)


def test_an_answer_posted_to_the_other_node_reaches_the_upstream(cluster: Cluster) -> None:
    on_a = Raw(cluster.a.port, cluster.slug, cluster.tokens[0])
    initialize_with(on_a, {"elicitation": {}})
    response = open_call(
        cluster.a.port,
        on_a,
        {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "py__ask_name"}},
    )
    assert response.status == 200
    messages = sse_messages(response)
    request = next(messages)
    assert request["method"] == "elicitation/create"
    # Another client session (another token) cannot answer it: ignored, 202 as for any response.
    stranger = Raw(cluster.b.port, cluster.slug, cluster.tokens[1])
    initialize_with(stranger, {"elicitation": {}})
    answer = {
        "jsonrpc": "2.0",
        "id": request["id"],
        "result": {"action": "accept", "content": {"name": "Eve"}},
    }
    assert stranger.post(answer)[0] == 202
    # The client's own session answers on node B; node A holds the upstream exchange.
    on_b = on_a.on(cluster.b.port)
    answer["result"]["content"] = {"name": "Grace"}  # type: ignore[index]
    assert on_b.post(answer)[0] == 202
    final = list(messages)[-1]
    response.close()
    assert final["id"] == 9 and final["result"]["content"][0]["text"] == "hello Grace"
