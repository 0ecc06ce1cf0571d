"""The gateway's own ``requestState`` (gateway/inputreq.py): sealed (encrypted and authenticated), bound to the
token, workspace and tool it was issued for, expiring; anything else is a 400 + -32602, never a 500."""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from typing import Any

import pytest
from django.core.cache import cache
from django.test import override_settings

from gateway import bus, crypto, inputreq, protocol

STATE = inputreq.State(
    kind="upstream", token=7, workspace=3, tool="mo__greet_me", server=11, upstream_state="the-upstream's-own"
)


def opened(raw: object, **overrides: Any) -> inputreq.State | None:
    binding: dict[str, Any] = {"token_id": 7, "workspace_id": 3, "name": "mo__greet_me", "request_id": 1}
    binding.update(overrides)
    return inputreq.state_of({"requestState": raw}, **binding)


def refused(raw: object, **overrides: Any) -> protocol.ProtocolError:
    with pytest.raises(protocol.ProtocolError) as caught:
        opened(raw, **overrides)
    error = caught.value
    assert error.http_status == 400 and error.code == protocol.INVALID_PARAMS
    assert error.message.startswith("Invalid requestState: ")
    return error


def test_a_sealed_state_opens_for_its_own_token_workspace_and_tool() -> None:
    assert opened(STATE.seal()) == STATE


def test_a_sealed_state_is_not_readable() -> None:
    sealed = STATE.seal()
    decoded = base64.urlsafe_b64decode(sealed + "==")
    assert b"upstream" not in decoded and b"mo__greet_me" not in decoded


def test_no_request_state_is_no_state() -> None:
    assert inputreq.state_of({}, token_id=7, workspace_id=3, name="mo__greet_me", request_id=1) is None


@pytest.mark.parametrize("raw", ["", "made-up", "gAAAAA" + "A" * 100, 42, ["x"], {"a": 1}])
def test_a_forged_state_is_refused(raw: object) -> None:
    assert "not one this gateway issued" in refused(raw).message


def test_an_altered_state_is_refused() -> None:
    sealed = STATE.seal()
    flipped = sealed[:20] + ("A" if sealed[20] != "A" else "B") + sealed[21:]
    refused(flipped)


def test_a_state_of_another_token_workspace_or_tool_is_refused() -> None:
    sealed = STATE.seal()
    assert "another token" in refused(sealed, token_id=8).message
    assert "another token" in refused(sealed, workspace_id=4).message
    assert "another tool" in refused(sealed, name="mo__visit").message


def test_a_state_sealed_for_another_purpose_or_with_another_key_is_refused() -> None:
    payload = json.dumps(
        {"kind": "upstream", "token": 7, "workspace": 3, "tool": "mo__greet_me", "server": 11}
    )
    refused(crypto.seal(payload, "another-purpose"))
    with override_settings(SECRET_KEY="another-secret-key-" + "x" * 40):
        elsewhere = STATE.seal()
    refused(elsewhere)


def test_an_expired_state_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    sealed = STATE.seal()
    later = time.time() + inputreq.STATE_TTL_SECONDS + 61
    monkeypatch.setattr(time, "time", lambda: later)
    refused(sealed)


def test_input_responses_must_be_result_objects() -> None:
    for bad in (["x"], {"a": "text"}, "x"):
        with pytest.raises(protocol.ProtocolError) as caught:
            inputreq.state_of(
                {"inputResponses": bad}, token_id=7, workspace_id=3, name="mo__greet_me", request_id=1
            )
        assert caught.value.http_status == 400 and caught.value.code == protocol.INVALID_PARAMS


def test_a_retry_gives_the_upstream_its_own_state_and_the_answers() -> None:
    params = {"inputResponses": {"k": {"action": "accept", "content": {"name": "Ada"}}}}
    assert inputreq.upstream_params(STATE, params) == {**params, "requestState": "the-upstream's-own"}
    assert inputreq.upstream_params(None, {}) == {}


def test_a_missing_capability_is_named_in_the_error() -> None:
    requests = {"q": {"method": "sampling/createMessage", "params": {}}}
    why, capability = inputreq.refusal({"elicitation": {"form": {}}}, requests) or ("", "")
    assert capability == "sampling" and "did not declare the sampling capability" in why
    assert inputreq.refusal({"sampling": {}}, requests) is None
    body = inputreq.missing_capability(5, why, capability)
    assert body["error"]["code"] == -32021 and body["error"]["data"] == {
        "requiredCapabilities": {"sampling": {}}
    }


def test_a_retry_whose_holding_node_is_gone_is_told_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The round's cache entry outlives a node that died holding the call: nobody says it received the
    retry's answers, so the retry ends after RECEIVED_SECONDS with an error saying so, not at the call's
    timeout (60 s here) with "did not go on"."""
    monkeypatch.setattr(inputreq, "RECEIVED_SECONDS", 0.3)
    held = "round-of-a-dead-node"
    cache.set(inputreq.HELD_KEY.format(held), {"until": time.time() + 60}, 60)
    state = inputreq.State(kind="held", token=7, workspace=1, tool="py__ask", server=1, held=held)
    published: list[dict[str, Any]] = []
    with bus.listening(inputreq.INPUT_CHANNEL.format(held)) as inbox:  # the round's channel, nobody answering
        body = inputreq.resume(state, {"inputResponses": {"aerostack-1": {"action": "cancel"}}}, 5)
        message = inbox.get(1.0)
        if message is not None:
            published.append(message)
    assert body["id"] == 5
    assert body["result"]["isError"] is True
    assert "node holding this call is gone" in body["result"]["content"][0]["text"]
    assert published and published[0]["responses"] == {"aerostack-1": {"action": "cancel"}}


PROMPT_STATE = inputreq.State(
    kind="upstream", token=7, workspace=3, tool="mo__introduce", server=11, method="prompts/get"
)
RESOURCE_STATE = inputreq.State(
    kind="upstream",
    token=7,
    workspace=3,
    tool="aerostack://mo/letters://spring",
    server=11,
    method="resources/read",
)


def test_a_prompts_or_resources_state_opens_for_its_own_method_and_name() -> None:
    assert opened(PROMPT_STATE.seal(), name="mo__introduce", method="prompts/get") == PROMPT_STATE
    uri = "aerostack://mo/letters://spring"
    assert opened(RESOURCE_STATE.seal(), name=uri, method="resources/read") == RESOURCE_STATE


def test_a_state_of_another_method_is_refused_even_for_the_same_name() -> None:
    # A prompt and a tool may share a name: neither one's state opens the other.
    tool_state = inputreq.State(kind="upstream", token=7, workspace=3, tool="mo__introduce", server=11)
    assert (
        "issued for tools/call, not prompts/get"
        in refused(tool_state.seal(), name="mo__introduce", method="prompts/get").message
    )
    assert (
        "issued for prompts/get, not tools/call" in refused(PROMPT_STATE.seal(), name="mo__introduce").message
    )
    assert (
        "issued for prompts/get, not resources/read"
        in refused(PROMPT_STATE.seal(), name="mo__introduce", method="resources/read").message
    )


def test_a_state_of_another_prompt_or_resource_is_refused() -> None:
    assert (
        "another prompt, not mo__greet"
        in refused(PROMPT_STATE.seal(), name="mo__greet", method="prompts/get").message
    )
    assert (
        "another resource"
        in refused(
            RESOURCE_STATE.seal(), name="aerostack://mo/letters://autumn", method="resources/read"
        ).message
    )


def test_a_tools_state_is_sealed_as_before_states_named_their_method() -> None:
    # A node not yet upgraded (rolling deploy) would refuse a field it does not know.
    assert "method" not in json.loads(crypto.unseal(STATE.seal(), inputreq.STATE_PURPOSE, 60) or "{}")
    assert json.loads(crypto.unseal(PROMPT_STATE.seal(), inputreq.STATE_PURPOSE, 60) or "{}")["method"] == (
        "prompts/get"
    )


def test_a_state_minted_before_states_named_their_method_is_a_tools() -> None:
    payload = json.dumps(
        {"kind": "upstream", "token": 7, "workspace": 3, "tool": "mo__greet_me", "server": 11}
    )
    old = crypto.seal(payload, inputreq.STATE_PURPOSE)
    assert opened(old) == inputreq.State(
        kind="upstream", token=7, workspace=3, tool="mo__greet_me", server=11
    )
    refused(old, method="prompts/get")


def test_a_modern_clients_input_required_keeps_the_requests_and_seals_the_state() -> None:
    result = {
        "resultType": "input_required",
        "inputRequests": {"name": {"method": "elicitation/create", "params": {"message": "Who?"}}},
        "requestState": "the-upstream's-own",
    }
    state = dataclasses.replace(PROMPT_STATE, upstream_state="the-upstream's-own")
    body = inputreq.ask_modern_client(4, {"elicitation": {"form": {}}}, state, result)
    answer = body["result"]
    assert answer["inputRequests"] == result["inputRequests"] and answer["resultType"] == "input_required"
    assert opened(answer["requestState"], name="mo__introduce", method="prompts/get") == state
    refused_body = inputreq.ask_modern_client(4, {}, state, result)
    assert refused_body["error"]["code"] == -32021 and refused_body["id"] == 4
