"""``prompts/get`` and ``resources/read`` answered with ``input_required`` (gateway/inputreq.py, gateway/features.py)
through Django's test client and the real SDK server of tests/e2e/modern_upstream.py (its ``introduce`` prompt
elicits, its ``letters://{topic}`` template samples): a 2026-07-28 client gets the input requests with the
gateway's sealed ``requestState``; a state forged, altered, or minted for another request, name or token is a
400 + -32602, never a 500, and uses nothing up."""

from __future__ import annotations

from typing import Any

import pytest

from gateway import inputreq
from gateway.models import Server, UsageEvent
from gateway.services import server_create
from tests.conftest import Team
from tests.factories import make_token
from tests.gateway.test_modern_endpoint import ModernClient

pytestmark = pytest.mark.django_db

PROMPT = "mo__introduce"
LETTER = "aerostack://mo/letters://spring"
CAPABLE = {"elicitation": {}, "sampling": {}}


@pytest.fixture
def mo_server(team: Team, modern_upstream: Any, settings: Any) -> Server:
    settings.GATEWAY_USAGE_ASYNC = False
    return server_create(
        workspace=team.workspace, actor=team.alice.user, name="Modern", slug="mo", url=modern_upstream.url
    )


@pytest.fixture
def client(team: Team, mo_server: Server) -> ModernClient:
    return ModernClient(make_token(team.bob).raw)


def ask(client: ModernClient, method: str, params: dict[str, Any], capabilities: Any = CAPABLE) -> Any:
    meta = client.envelope(**{"io.modelcontextprotocol/clientCapabilities": capabilities})
    return client.request(method, params, meta=meta)


def refusal(response: Any) -> str:
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == -32602, error
    return str(error["message"])


def test_it_relays_a_prompts_input_required_with_a_sealed_state(client: ModernClient) -> None:
    response = ask(client, "prompts/get", {"name": PROMPT})
    assert response.status_code == 200, response.content
    result = response.json()["result"]
    assert result["resultType"] == "input_required"
    assert result["inputRequests"]["name"]["method"] == "elicitation/create"
    assert "introduce:asked-name" not in result["requestState"]  # the upstream's own state, sealed
    row = UsageEvent.objects.get(method="prompts/get")
    assert (row.outcome, row.detail, row.server_slug, row.tool) == ("ok", "input required", "mo", "introduce")
    retry = {
        "name": PROMPT,
        "inputResponses": {"name": {"action": "accept", "content": {"name": "Ada"}}},
        "requestState": result["requestState"],
    }
    done = ask(client, "prompts/get", retry)
    assert done.status_code == 200, done.content
    assert done.json()["result"]["messages"][0]["content"]["text"] == "Introduce Ada to the team."


def test_it_relays_a_resources_input_required_without_a_cache_lifetime(client: ModernClient) -> None:
    response = ask(client, "resources/read", {"uri": LETTER})
    assert response.status_code == 200, response.content
    result = response.json()["result"]
    assert result["resultType"] == "input_required" and "ttlMs" not in result and "cacheScope" not in result
    (request,) = result["inputRequests"].values()
    assert request["method"] == "sampling/createMessage"
    sampled = {"role": "assistant", "content": {"type": "text", "text": "dear"}, "model": "m"}
    retry = {"uri": LETTER, "inputResponses": {"draft": sampled}, "requestState": result["requestState"]}
    done = ask(client, "resources/read", retry).json()["result"]
    assert done["contents"][0] == {
        "uri": LETTER,
        "mimeType": "text/plain",
        "text": "A letter about spring: dear",
    }
    assert done["resultType"] == "complete" and "ttlMs" in done


def test_a_client_without_the_capability_gets_minus_32021_at_once(client: ModernClient) -> None:
    response = ask(client, "resources/read", {"uri": LETTER}, capabilities={"elicitation": {}})
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == -32021 and error["data"] == {"requiredCapabilities": {"sampling": {}}}
    assert "sampling" in error["message"]


@pytest.mark.parametrize("raw", ["made-up", 7, ["x"]])
def test_a_forged_state_is_refused(client: ModernClient, raw: object) -> None:
    assert "requestState" in refusal(ask(client, "prompts/get", {"name": PROMPT, "requestState": raw}))


def test_an_altered_state_is_refused(client: ModernClient) -> None:
    state = ask(client, "prompts/get", {"name": PROMPT}).json()["result"]["requestState"]
    altered = state[:-4] + ("AAAA" if not state.endswith("AAAA") else "BBBB")
    assert "requestState" in refusal(ask(client, "prompts/get", {"name": PROMPT, "requestState": altered}))


def test_a_state_for_another_request_or_name_is_refused(client: ModernClient) -> None:
    prompt_state = ask(client, "prompts/get", {"name": PROMPT}).json()["result"]["requestState"]
    letter_state = ask(client, "resources/read", {"uri": LETTER}).json()["result"]["requestState"]
    tool_state = ask(client, "tools/call", {"name": "mo__greet_me", "arguments": {}}).json()["result"]
    tool_state = tool_state["requestState"]
    autumn = "aerostack://mo/letters://autumn"
    assert "another prompt" in refusal(
        ask(client, "prompts/get", {"name": "mo__greet", "requestState": prompt_state})
    )
    assert "another resource" in refusal(
        ask(client, "resources/read", {"uri": autumn, "requestState": letter_state})
    )
    assert "not prompts/get" in refusal(
        ask(client, "prompts/get", {"name": PROMPT, "requestState": tool_state})
    )
    assert "not resources/read" in refusal(
        ask(client, "resources/read", {"uri": LETTER, "requestState": prompt_state})
    )
    assert "not tools/call" in refusal(
        ask(client, "tools/call", {"name": "mo__greet_me", "arguments": {}, "requestState": letter_state})
    )


def test_a_state_of_another_token_is_refused(team: Team, client: ModernClient) -> None:
    state = ask(client, "prompts/get", {"name": PROMPT}).json()["result"]["requestState"]
    other = ModernClient(make_token(team.alice).raw)
    assert "another token" in refusal(ask(other, "prompts/get", {"name": PROMPT, "requestState": state}))


def test_a_held_rounds_state_is_refused_once_its_round_is_over(
    team: Team, client: ModernClient, mo_server: Server
) -> None:
    # A state naming a held round (of a legacy upstream's prompt) that no node holds: told so, at once.
    token = make_token(team.bob)
    held = inputreq.State(
        kind="held",
        token=token.token.pk,
        workspace=team.workspace.pk,
        tool=PROMPT,
        server=mo_server.pk,
        held="a-round-no-one-holds",
        method="prompts/get",
    )
    assert "round is over" in refusal(
        ask(ModernClient(token.raw), "prompts/get", {"name": PROMPT, "requestState": held.seal()})
    )


def test_bad_input_responses_are_refused(client: ModernClient) -> None:
    message = refusal(ask(client, "prompts/get", {"name": PROMPT, "inputResponses": {"name": "Ada"}}))
    assert "inputResponses" in message
