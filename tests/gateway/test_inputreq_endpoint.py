"""A held call (a 2026-07-28 client, a legacy upstream asking it something in a tools/call or a prompts/get:
gateway/inputreq.py) through Django's test client and the real Python SDK server: bounded by the server's
timeout, after which nothing of it is left (threads, bus subscriptions, the round's cache entry, the in-flight
slot), and a late retry is told so at once."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache

from gateway import bus, crypto, inflight, inputreq, protocol, relay
from gateway.models import UsageEvent
from gateway.services import server_create
from tests.conftest import Team
from tests.e2e.upstreams import start_python_upstream
from tests.factories import make_token
from tests.gateway.helpers import McpTestClient, messages_of
from tests.gateway.test_modern_endpoint import ModernClient

pytestmark = pytest.mark.django_db(transaction=True)  # the held call's own thread writes the usage row


@pytest.fixture(scope="module")
def asking_upstream() -> Iterator[Any]:
    """The SDK server (legacy era) with a prompt that elicits on its reply stream (py_upstream.py --asking)."""
    upstream = start_python_upstream("--asking")
    try:
        yield upstream
    finally:
        upstream.stop()


def _input_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("aerostack-input")]


# What is held: a tools/call (the SDK server's ask_name tool), and a prompts/get (py_upstream.py --asking's
# introduce prompt): each elicits on its reply stream.
HELD = {
    "tools/call": ("py_upstream", {"name": "quick__ask_name", "arguments": {}}),
    "prompts/get": ("asking_upstream", {"name": "quick__introduce"}),
}


def _quick_server(team: Team, url: str) -> None:
    """The server ``quick``: a 1 s timeout bounds how long a held call waits for its retry."""
    server_create(
        workspace=team.workspace,
        actor=team.alice.user,
        name="Quick",
        slug="quick",
        url=url,
        timeout_seconds=1,
    )


def _call(client: ModernClient, method: str, extra: dict[str, Any] | None = None) -> Any:
    meta = client.envelope(**{"io.modelcontextprotocol/clientCapabilities": {"elicitation": {}}})
    return client.request(method, {**HELD[method][1], **(extra or {})}, meta=meta)


@pytest.mark.parametrize("method", list(HELD))
@pytest.mark.usefixtures("one_cache_prefix")  # the held call's thread uses the test's cache keys too
def test_a_held_call_lets_everything_go_after_its_timeout(
    team: Team, settings: Any, request: pytest.FixtureRequest, method: str
) -> None:
    settings.GATEWAY_USAGE_ASYNC = False
    _quick_server(team, request.getfixturevalue(HELD[method][0]).url)
    client = ModernClient(make_token(team.bob).raw)
    subscribers = bus.subscribers()
    slots = dict(inflight._local)  # other tests of this process may have left slots of their own tokens
    response = _call(client, method)
    assert response.status_code == 200, response.content
    result = response.json()["result"]
    assert result["resultType"] == "input_required"
    assert _input_threads() and bus.subscribers() == subscribers + 1
    opened = crypto.unseal(result["requestState"], inputreq.STATE_PURPOSE, 60)
    assert opened is not None
    round_key = inputreq.HELD_KEY.format(json.loads(opened)["held"])
    assert cache.get(round_key) is not None
    deadline = time.monotonic() + 10
    while (_input_threads() or bus.subscribers() != subscribers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _input_threads() == [] and bus.subscribers() == subscribers
    assert inflight._local == slots  # the call's in-flight slots are given back
    assert cache.get(round_key) is None
    row = UsageEvent.objects.get(server_slug="quick")
    assert (row.outcome, row.detail) == ("timeout", "the client did not answer elicitation/create in time")
    assert row.method == method
    started = time.monotonic()
    (key,) = result["inputRequests"]
    late = _call(
        client,
        method,
        {
            "inputResponses": {key: {"action": "accept", "content": {"name": "Late"}}},
            "requestState": result["requestState"],
        },
    )
    assert time.monotonic() - started < 1
    assert late.status_code == 400
    error = late.json()["error"]
    assert error["code"] == -32602 and "round is over" in error["message"]


@pytest.mark.usefixtures("one_cache_prefix")
def test_a_held_prompt_counts_in_the_tokens_in_flight_cap(
    team: Team, settings: Any, asking_upstream: Any
) -> None:
    settings.GATEWAY_USAGE_ASYNC = False
    settings.GATEWAY_MAX_INFLIGHT_PER_TOKEN = 1
    _quick_server(team, asking_upstream.url)
    client = ModernClient(make_token(team.bob).raw)
    first = _call(client, "prompts/get")
    assert first.json()["result"]["resultType"] == "input_required"  # held: it has the token's one slot
    second = _call(client, "prompts/get")  # its upstream's question is refused at once, saying why
    assert "Too many tool calls in flight for this token" in second.json()["error"]["message"]
    _wait_for_input_threads()
    again = _call(client, "prompts/get")  # the first gave its slot back when its round timed out
    assert again.json()["result"]["resultType"] == "input_required", again.content
    _wait_for_input_threads()  # its usage row is written before the test's database goes


def _wait_for_input_threads() -> None:
    deadline = time.monotonic() + 10
    while _input_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _input_threads() == []


@pytest.mark.usefixtures("one_cache_prefix")
def test_a_legacy_clients_prompt_that_asks_streams_and_counts_in_the_in_flight_cap_until_it_ends(
    team: Team, settings: Any, asking_upstream: Any
) -> None:
    """A legacy client, a legacy upstream (py_upstream.py --asking's introduce): the upstream's elicitation
    is relayed on the reply, which becomes SSE; while it asks it holds the token's one in-flight slot, and
    gives it back when the stream ends."""
    settings.GATEWAY_USAGE_ASYNC = False
    settings.GATEWAY_MAX_INFLIGHT_PER_TOKEN = 1
    server_create(
        workspace=team.workspace, actor=team.alice.user, name="Py", slug="py", url=asking_upstream.url
    )
    client = McpTestClient(make_token(team.bob).raw)
    init = client.request(
        "initialize",
        {
            "protocolVersion": "2025-11-25",
            "capabilities": {"elicitation": {}},
            "clientInfo": {"name": "t", "version": "1"},
        },
    )
    client.session_id = init["Mcp-Session-Id"]
    slots = dict(inflight._local)
    first = client.request("prompts/get", {"name": "py__introduce"})
    assert first.streaming and first["Content-Type"] == "text/event-stream"
    chunks = iter(first.streaming_content)
    parser = protocol.SSEParser()
    events = parser.feed(next(chunks))
    asked = json.loads(events[0].data)
    assert asked["method"] == "elicitation/create" and asked["id"].startswith(relay.PREFIX), asked
    assert asked["params"]["message"] == "What is your name?"
    # Asking, it has the token's one slot: another prompt's upstream question is refused at once, saying why.
    (second,) = messages_of(client.request("prompts/get", {"name": "py__introduce"}))
    assert "Too many tool calls in flight for this token" in second["error"]["message"], second
    answered = client.post(
        {"jsonrpc": "2.0", "id": asked["id"], "result": {"action": "accept", "content": {"name": "Ada"}}}
    )
    assert answered.status_code == 202
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    first.close()
    final = json.loads(events[-1].data)
    assert (
        final["id"] == 2 and final["result"]["messages"][0]["content"]["text"] == "Introduce Ada to the team."
    )
    assert inflight._local == slots  # the slot is given back when the stream ends
    rows = list(UsageEvent.objects.filter(method="prompts/get").order_by("pk").values_list("outcome", "tool"))
    assert rows == [("upstream_error", "introduce"), ("ok", "introduce")], rows  # one row per request
