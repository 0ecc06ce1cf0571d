"""gateway.relay and gateway.standalone: capabilities, refusals, the answer path over the bus, logging levels
(against the real Python SDK upstream where an upstream is involved)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from gateway import bus, protocol, relay, sessions, standalone
from gateway.upstream import UpstreamConfig, UpstreamSession


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        (None, {}),
        ({}, {}),
        ({"sampling": {}, "roots": {"listChanged": True}}, {"sampling": {}, "roots": {"listChanged": True}}),
        ({"elicitation": {}}, {"elicitation": {"form": {}}}),  # an empty object means form mode (2025-11-25)
        ({"elicitation": {"url": {}}}, {"elicitation": {"url": {}}}),
        ({"elicitation": {"form": {}, "url": {}}}, {"elicitation": {"form": {}, "url": {}}}),
        ({"sampling": True, "elicitation": "yes", "experimental": {}}, {}),  # not objects: not declared
    ],
)
def test_client_capabilities_keep_what_the_gateway_relays(declared: Any, expected: dict[str, Any]) -> None:
    assert relay.client_capabilities(declared) == expected


@pytest.mark.parametrize(
    ("capabilities", "method", "params", "streaming", "why"),
    [
        ({"sampling": {}}, "sampling/createMessage", {}, True, None),
        ({}, "sampling/createMessage", {}, True, "did not declare the sampling capability"),
        ({"sampling": {}}, "sampling/createMessage", {}, False, "accepts only JSON replies"),
        ({"elicitation": {"form": {}}}, "elicitation/create", {"mode": "url"}, True, "url-mode elicitation"),
        ({"elicitation": {"form": {}}}, "elicitation/create", {}, True, None),
        ({"elicitation": {"url": {}}}, "elicitation/create", {}, True, "form-mode elicitation"),
        ({"roots": {}}, "roots/list", None, True, None),
        ({"roots": {}}, "tasks/get", None, True, "not a request the Aerostack gateway relays"),
    ],
)
def test_refusal_says_why(
    capabilities: dict[str, Any], method: str, params: Any, streaming: bool, why: str | None
) -> None:
    found = relay.refusal(capabilities, method, params, streaming)
    assert found is None if why is None else (found is not None and why in found)


def test_log_messages_name_the_server_and_respect_the_clients_level() -> None:
    note = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "x"}}
    assert relay.log_message(note, "py", None) == {
        **note,
        "params": {"level": "info", "data": "x", "logger": "py"},
    }
    named = {**note, "params": {"level": "error", "logger": "db", "data": "y"}}
    assert relay.log_message(named, "py", "warning")["params"]["logger"] == "py/db"  # type: ignore[index]
    assert relay.log_message(note, "py", "warning") is None  # info is below warning
    assert relay.log_message(note, "py", "info") is not None


def test_check_level_refuses_an_unknown_level() -> None:
    assert relay.check_level({"level": "notice"}, 1) == "notice"
    with pytest.raises(protocol.ProtocolError) as raised:
        relay.check_level({"level": "loud"}, 7)
    assert raised.value.code == protocol.INVALID_PARAMS and raised.value.id == 7


def _message(body: dict[str, Any]) -> protocol.Message:
    import json

    return protocol.parse_message(json.dumps(body).encode())


def test_a_clients_answer_and_progress_are_published_on_the_relays_channel() -> None:
    relay_id = f"{relay.PREFIX}abc"
    with bus.listening(f"reply:{relay_id}") as inbox:
        answer = _message({"jsonrpc": "2.0", "id": relay_id, "result": {"action": "decline"}})
        assert relay.deliver("s1", answer) is True
        progress = _message(
            {
                "jsonrpc": "2.0",
                "method": "notifications/progress",
                "params": {"progressToken": relay_id, "progress": 1, "total": 2},
            }
        )
        assert relay.deliver("s1", progress) is True
        assert inbox.get(2) == {
            "session": "s1",
            "kind": "response",
            "response": {"result": {"action": "decline"}},
        }
        assert inbox.get(2) == {"session": "s1", "kind": "progress", "params": {"progress": 1, "total": 2}}
    # Answers to requests the gateway never relayed are not published.
    assert relay.deliver("s1", _message({"jsonrpc": "2.0", "id": 5, "result": {}})) is False
    cancelled = _message({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 3}})
    assert relay.deliver("s1", cancelled) is False


def _session(capabilities: dict[str, Any]) -> sessions.GatewaySession:
    return sessions.GatewaySession(
        id="gs-1",
        token_id=1,
        workspace_id=1,
        protocol_version="2025-11-25",
        expires_at=time.time() + 60,
        client_capabilities=capabilities,
    )


@pytest.fixture
def upstream(py_upstream: Any, settings: Any) -> Any:
    settings.ALLOW_PRIVATE_UPSTREAMS = True
    session = UpstreamSession(UpstreamConfig(server_id=1, slug="py", url=py_upstream.url, timeout=5))
    yield session
    session.end()


def test_a_relayed_requests_progress_token_is_mapped_and_an_ended_call_answers_the_upstream(
    upstream: UpstreamSession,
) -> None:
    """A request whose call ended before the client answered gets an error upstream (nothing hangs)."""
    upstream.ensure_initialized()
    call = relay.CallRelay(upstream, _session({"sampling": {}}), streaming=True, started=time.monotonic())
    incoming = {
        "jsonrpc": "2.0",
        "id": 41,
        "method": "sampling/createMessage",
        "params": {"messages": [], "maxTokens": 5, "_meta": {"progressToken": "up-token"}},
    }
    message = call.request(incoming)
    assert message is not None and message["id"].startswith(relay.PREFIX)
    assert message["params"]["_meta"] == {
        "progressToken": message["id"]
    }  # the client reports on the relay id
    assert message["params"]["maxTokens"] == 5
    assert relay.ACTIVE.count >= 1
    call.close()
    deadline = time.monotonic() + 5
    while relay.ACTIVE.count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert relay.ACTIVE.count == 0  # the waiter answered the upstream (an unknown id to it) and ended


def test_the_upstreams_cancellation_reaches_the_client_under_the_relay_id(upstream: UpstreamSession) -> None:
    upstream.ensure_initialized()
    call = relay.CallRelay(upstream, _session({"roots": {}}), streaming=True, started=time.monotonic())
    message = call.request({"jsonrpc": "2.0", "id": "r1", "method": "roots/list"})
    assert message is not None and "params" not in message
    notice = call.cancelled({"requestId": "r1", "reason": "took too long"})
    assert notice == {
        "jsonrpc": "2.0",
        "method": "notifications/cancelled",
        "params": {"requestId": message["id"], "reason": "took too long"},
    }
    assert call.cancelled({"requestId": "r1"}) is None  # once
    call.close()


def test_log_levels_reach_upstream_sessions_opened_later(py_upstream: Any, settings: Any) -> None:
    """The most verbose level wins on a shared session; a new session gets the client's level before a call."""
    settings.ALLOW_PRIVATE_UPSTREAMS = True
    config = UpstreamConfig(server_id=2, slug="py", url=py_upstream.url, timeout=5)
    first, later = UpstreamSession(config), UpstreamSession(config)
    try:
        assert relay.set_level("warning", [lambda: first]) == {}
        assert first.log_level == "warning"
        assert first.set_log_level("error") is False  # less verbose than the shared session runs: not sent
        assert first.request("tools/call", {"name": "last_level"})["content"][0]["text"] == "warning"
        relay.ensure_level(later, "error")  # a session opened after the setLevel
        assert later.log_level == "error"
        assert later.request("tools/call", {"name": "last_level"})["content"][0]["text"] == "error"
    finally:
        first.end()
        later.end()


def test_the_get_stream_is_read_while_calls_run_and_closed_after_them(
    upstream: UpstreamSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(standalone, "STANDALONE_LINGER_SECONDS", 0.5)
    stream = standalone.of(upstream)
    assert standalone.of(upstream) is stream
    stream.enter(None)
    assert stream._reader is not None and stream._reader.is_alive()
    reader = stream._reader
    stream.leave(None)
    reader.join(5)
    assert not reader.is_alive() and stream._reader is None  # closed once the linger was over


@pytest.mark.django_db
def test_a_list_change_announced_on_the_get_stream_rebuilds_the_workspaces_list(
    upstream: UpstreamSession,
) -> None:
    from gateway import catalog

    before = catalog.version(77)
    call = relay.CallRelay(upstream, _session({"sampling": {}}), streaming=True, started=time.monotonic())
    call.session = sessions.GatewaySession(**{**call.session.__dict__, "workspace_id": 77})
    stream = standalone.Standalone(upstream)
    stream._calls[id(call)] = call
    stream._handle('{"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}')
    assert catalog.version(77) != before


def test_a_get_stream_request_of_several_clients_calls_is_refused(upstream: UpstreamSession) -> None:
    """Two clients with calls in flight on one shared upstream session: nobody can tell whose it is."""
    upstream.ensure_initialized()
    stream = standalone.Standalone(upstream)
    for name in ("gs-a", "gs-b"):
        session = sessions.GatewaySession(**{**_session({"sampling": {}}).__dict__, "id": name})
        call = relay.CallRelay(upstream, session, streaming=True, started=time.monotonic())
        stream._calls[id(call)] = call
    before = relay.ACTIVE.count
    stream._handle('{"jsonrpc": "2.0", "id": 5, "method": "sampling/createMessage", "params": {}}')
    assert relay.ACTIVE.count == before  # refused (answered upstream at once), nothing waits


def test_a_held_stream_whose_session_the_upstream_forgot_renews_it_and_subscribes_again(
    upstream: UpstreamSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK server answers the GET of a session it does not know with 404: the reader re-initializes
    (not "offers no GET stream", which would stop it for REFUSED_RETRY_SECONDS), opens the stream on the new
    session without the old session's Last-Event-ID, and subscribes the held URI again there."""
    upstream.ensure_initialized()
    asked: list[tuple[str, dict[str, Any] | None, str | None]] = []
    real_request = upstream.request

    def request(method: str, params: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        asked.append((method, params, upstream.session_id))
        return real_request(method, params, **kwargs)

    monkeypatch.setattr(upstream, "request", request)
    forgotten = "0123456789abcdef0123456789abcdef"
    upstream.session_id = forgotten  # as after the upstream's restart
    stream = standalone.of(upstream)
    stream._last_event = (forgotten, "old-event-7")
    stream.hold("notes://readme", forgotten)
    deadline = time.monotonic() + 10
    while not asked and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert asked, "the held URI was not subscribed again"
        method, params, on = asked[0]
        assert (method, params) == ("resources/subscribe", {"uri": "notes://readme"})
        assert on not in (None, forgotten) and on == upstream.session_id
        assert stream._refused_until == 0.0  # a forgotten session is not "offers no GET stream"
    finally:
        stream.unhold("notes://readme")
        upstream.end()
