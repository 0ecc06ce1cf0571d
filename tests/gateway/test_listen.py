"""``subscriptions/listen`` (2026-07-28, gateway/listen.py) through Django's test client, its stream driven on
an event loop as aerostack.serving runs it: the acknowledgment, the subscription id on every frame, only the
lists asked for, resource updates of subscribed URIs (server-everything), the checks before a stream opens
(401 first, 406, malformed filters 400 + -32602, the caps shared with GET streams) and the end of a stream
whose token is revoked."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import features, live
from gateway.models import Server
from gateway.services import server_create, tool_set_enabled
from tests.conftest import Team
from tests.factories import make_token
from tests.gateway.test_live import Reader, _fresh_bus, in_thread  # noqa: F401  (_fresh_bus: autouse)
from tests.gateway.test_modern_endpoint import ModernClient
from tokens.services import token_revoke

SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
EV_URI = "aerostack://ev/demo://resource/static/document/architecture.md"
EV_UPSTREAM_URI = "demo://resource/static/document/architecture.md"

pytestmark = pytest.mark.usefixtures("one_cache_prefix")


@pytest.fixture
def py_server(team: Team, py_upstream: Any) -> Server:
    return server_create(
        workspace=team.workspace, actor=team.alice.user, name="Python", slug="py", url=py_upstream.url
    )


@pytest.fixture
def ev_server(team: Team, everything_upstream: Any) -> Server:
    return server_create(
        workspace=team.workspace,
        actor=team.alice.user,
        name="Everything",
        slug="ev",
        url=everything_upstream.url,
    )


def listen(client: ModernClient, notifications: Any, **headers: str | None) -> Any:
    params = {"notifications": notifications}
    return client.request("subscriptions/listen", params, headers=dict(headers) if headers else None)


def opened(client: ModernClient, notifications: dict[str, Any]) -> Reader:
    response = listen(client, notifications)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "text/event-stream" and response["X-Accel-Buffering"] == "no"
    return Reader(response.loop_stream)


# -- the stream -------------------------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_a_listen_stream_acknowledges_then_sends_only_the_lists_asked_for(
    team: Team, py_server: Server
) -> None:
    client = ModernClient(make_token(team.bob).raw)

    async def scenario() -> None:
        reader = await in_thread(opened, client, {"toolsListChanged": True, "x-unknown": True})
        sid = client.next_id
        ack = await reader.event()
        # The first frame, with the honored subset (unknown keys are not honored) and the subscription id.
        assert ack == {
            "jsonrpc": "2.0",
            "method": "notifications/subscriptions/acknowledged",
            "params": {"notifications": {"toolsListChanged": True}, "_meta": {SUBSCRIPTION_ID: sid}},
        }
        assert reader.last_id is None  # 2026-07-28 streams are not resumable: no event ids
        await in_thread(client.request, "tools/list")  # records the server's tool snapshot
        await in_thread(tool_set_enabled, server=py_server, actor=team.alice.user, tool="echo", enabled=False)
        changed = await reader.event()
        assert changed == {
            "jsonrpc": "2.0",
            "method": "notifications/tools/list_changed",
            "params": {"_meta": {SUBSCRIPTION_ID: sid}},
        }
        # A change tells legacy streams about resources and prompts too: not this one, which asked for tools.
        with pytest.raises(TimeoutError):
            await reader.event(timeout=1.5)
        assert reader.comments >= 1  # keep-alive comments meanwhile
        await reader.close()

    asyncio.run(scenario())
    assert live.open_streams == 0 and not live._local  # its slot went back


@pytest.mark.django_db(transaction=True)
def test_every_list_asked_for_is_sent(team: Team, py_server: Server) -> None:
    client = ModernClient(make_token(team.bob).raw)
    wanted = {"toolsListChanged": True, "promptsListChanged": True, "resourcesListChanged": True}

    async def scenario() -> None:
        reader = await in_thread(opened, client, wanted)
        assert (await reader.event())["params"]["notifications"] == wanted  # type: ignore[index]
        await in_thread(client.request, "tools/list")  # records the server's tool snapshot
        await in_thread(tool_set_enabled, server=py_server, actor=team.alice.user, tool="echo", enabled=False)
        methods = [(await reader.event())["method"] for _ in range(3)]  # type: ignore[index]
        assert methods == [f"notifications/{name}/list_changed" for name in ("tools", "resources", "prompts")]
        await reader.close()

    asyncio.run(scenario())


@pytest.mark.django_db(transaction=True)
def test_a_scoped_token_is_told_only_of_changes_its_scope_shows(
    team: Team, py_server: Server, py_upstream: Any
) -> None:
    other = server_create(
        workspace=team.workspace, actor=team.alice.user, name="Python 2", slug="py2", url=py_upstream.url
    )
    scoped = ModernClient(make_token(team.bob, scopes={other.pk: None}).raw)
    everything = ModernClient(make_token(team.bob).raw)

    async def scenario() -> None:
        await in_thread(everything.request, "tools/list")  # records both servers' tool snapshots
        watching_scoped = await in_thread(opened, scoped, {"toolsListChanged": True})
        watching_all = await in_thread(opened, everything, {"toolsListChanged": True})
        await watching_scoped.event()
        await watching_all.event()
        # A tool of py (outside the scope) switched off: only the unscoped token's stream hears of it.
        await in_thread(tool_set_enabled, server=py_server, actor=team.alice.user, tool="echo", enabled=False)
        assert (await watching_all.event())["method"] == "notifications/tools/list_changed"  # type: ignore[index]
        with pytest.raises(TimeoutError):
            await watching_scoped.event(timeout=1.5)
        # One of py2 (in the scope): both.
        await in_thread(tool_set_enabled, server=other, actor=team.alice.user, tool="echo", enabled=False)
        assert (await watching_scoped.event())["method"] == "notifications/tools/list_changed"  # type: ignore[index]
        assert (await watching_all.event())["method"] == "notifications/tools/list_changed"  # type: ignore[index]
        await watching_scoped.close()
        await watching_all.close()

    asyncio.run(scenario())


@pytest.mark.django_db(transaction=True)
def test_a_revoked_token_ends_the_stream_with_an_error(team: Team, py_server: Server) -> None:
    created = make_token(team.bob)
    client = ModernClient(created.raw)

    async def scenario() -> None:
        reader = await in_thread(opened, client, {"toolsListChanged": True})
        sid = client.next_id
        await reader.event()
        await in_thread(token_revoke, token=created.token, actor=None)
        ended = await reader.event()
        assert ended is not None and ended["id"] == sid and ended["error"]["code"] == -32001
        assert await reader.ended()
        await reader.close()

    asyncio.run(scenario())
    assert live.open_streams == 0


# -- resource subscriptions (server-everything offers them) -----------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_resource_updates_of_a_subscribed_uri_come_on_the_stream(team: Team, ev_server: Server) -> None:
    client = ModernClient(make_token(team.bob).raw)
    unknown = "aerostack://nope/demo://x"

    async def scenario() -> None:
        reader = await in_thread(opened, client, {"resourceSubscriptions": [EV_URI, unknown, EV_URI]})
        sid = client.next_id
        ack = await reader.event()
        # Honored: the URI the upstream subscribed; an unknown server's URI is left out.
        assert ack["params"]["notifications"] == {"resourceSubscriptions": [EV_URI]}  # type: ignore[index]
        subscribed = features.subscribers(ev_server.pk, EV_UPSTREAM_URI)
        assert list(subscribed.values()) == [EV_URI]
        subscriber = next(iter(subscribed))
        assert subscriber.startswith("listen:")
        sent = await in_thread(features.resource_updated, ev_server.pk, {"uri": EV_UPSTREAM_URI})
        assert sent == 1
        assert await reader.event() == {
            "jsonrpc": "2.0",
            "method": "notifications/resources/updated",
            "params": {"uri": EV_URI, "_meta": {SUBSCRIPTION_ID: sid}},
        }
        await reader.close()
        # The stream ended: its subscription is dropped (and the upstream's, no one else wanting it), in a
        # thread of its own.
        for _ in range(100):
            if not features.subscribers(ev_server.pk, EV_UPSTREAM_URI):
                break
            await asyncio.sleep(0.05)
        assert features.subscribers(ev_server.pk, EV_UPSTREAM_URI) == {}

    asyncio.run(scenario())


@pytest.mark.django_db(transaction=True)
def test_a_uri_out_of_the_tokens_scope_is_not_honored(
    team: Team, ev_server: Server, py_server: Server
) -> None:
    scoped = make_token(team.bob, scopes={py_server.pk: None})
    client = ModernClient(scoped.raw)

    async def scenario() -> None:
        reader = await in_thread(
            opened, client, {"toolsListChanged": True, "resourceSubscriptions": [EV_URI]}
        )
        ack = await reader.event()
        assert ack["params"]["notifications"] == {"toolsListChanged": True}  # type: ignore[index]
        assert features.subscribers(ev_server.pk, EV_UPSTREAM_URI) == {}
        await reader.close()

    asyncio.run(scenario())


# -- what is checked before a stream opens ------------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize("authorization", [None, "Bearer mwt_not-a-token"])
def test_a_bad_token_gets_401_first(team: Team, authorization: str | None) -> None:
    client = ModernClient(None)
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    response = listen(client, {"toolsListChanged": True}, **headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith('Bearer realm="aerostack"')
    assert response.json()["error"]["code"] == -32001
    assert not live._local  # no slot taken
    client.raw_token = make_token(team.bob).raw  # the same request with a valid token: a stream
    opened = listen(client, {"toolsListChanged": True})
    assert opened.status_code == 200 and opened["Content-Type"] == "text/event-stream"
    opened.loop_stream.__self__.release()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "notifications",
    [
        None,
        [],
        "tools",
        {"toolsListChanged": "yes"},
        {"promptsListChanged": 1},
        {"resourceSubscriptions": "aerostack://ev/x"},
        {"resourceSubscriptions": [1]},
        {"resourceSubscriptions": [""]},
        {"resourceSubscriptions": [f"aerostack://ev/{n}" for n in range(65)]},
        {"resourceSubscriptions": ["aerostack://ev/" + "x" * 5000]},
    ],
)
def test_a_malformed_filter_is_400_and_32602(team: Team, notifications: Any) -> None:
    client = ModernClient(make_token(team.bob).raw)
    response = listen(client, notifications)
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["id"] == client.next_id and body["error"]["code"] == -32602
    assert "subscriptions/listen" in body["error"]["message"]
    assert not live._local  # no slot taken


@pytest.mark.django_db
def test_listen_needs_an_event_stream_accept(team: Team) -> None:
    client = ModernClient(make_token(team.bob).raw)
    response = listen(client, {"toolsListChanged": True}, HTTP_ACCEPT="application/json")
    assert response.status_code == 406 and response.json()["error"]["code"] == -32600


@pytest.mark.django_db
def test_listen_checks_its_headers_like_any_modern_request(team: Team) -> None:
    client = ModernClient(make_token(team.bob).raw)
    response = listen(client, {"toolsListChanged": True}, HTTP_MCP_METHOD="tools/list")
    assert response.status_code == 400 and response.json()["error"]["code"] == -32020
    assert not live._local
    opened = listen(client, {"toolsListChanged": True})  # with its headers right: a stream
    assert opened.status_code == 200
    opened.loop_stream.__self__.release()


@pytest.mark.django_db
def test_the_per_token_cap_is_shared_with_get_streams(team: Team, settings: Any) -> None:
    settings.GATEWAY_MAX_STREAMS_PER_TOKEN = 2
    created = make_token(team.bob)
    client = ModernClient(created.raw)
    first = listen(client, {"toolsListChanged": True})
    second = listen(client, {"toolsListChanged": True})
    assert first.status_code == second.status_code == 200
    refused = listen(client, {"toolsListChanged": True})
    assert refused.status_code == 429 and refused["Retry-After"] == "60"
    body = json.loads(refused.content)
    assert body["id"] == client.next_id and body["error"]["code"] == -32000
    assert "at most 2" in body["error"]["message"]
    other = ModernClient(make_token(team.alice).raw)  # another token has slots of its own
    assert listen(other, {"toolsListChanged": True}).status_code == 200
    for response in (first, second):
        response.loop_stream.__self__.release()
    assert listen(client, {"toolsListChanged": True}).status_code == 200


@pytest.mark.django_db
def test_a_full_process_answers_503(team: Team, monkeypatch: Any) -> None:
    monkeypatch.setattr(live, "open_streams", 10**6)
    response = listen(ModernClient(make_token(team.bob).raw), {"toolsListChanged": True})
    assert response.status_code == 503 and response["Retry-After"] == "1"
    assert response.json()["error"]["code"] == -32000


@pytest.mark.django_db
def test_discover_advertises_what_listen_serves(team: Team, ev_server: Server) -> None:
    result = ModernClient(make_token(team.bob).raw).request("server/discover").json()["result"]
    capabilities = result["capabilities"]
    assert capabilities["tools"] == {"listChanged": True}
    assert capabilities["resources"] == {"subscribe": True, "listChanged": True}
    assert capabilities["prompts"] == {"listChanged": True}


FILTER_KEYS = ["toolsListChanged", "promptsListChanged", "resourcesListChanged", "resourceSubscriptions", "x"]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
filters = (
    st.dictionaries(st.sampled_from(FILTER_KEYS), json_values | st.lists(st.text(max_size=30), max_size=3))
    | json_values
)


@pytest.fixture
def fuzz_token(team: Team) -> str:
    return str(make_token(team.bob).raw)  # one for every example (a member holds 50 at most)


@pytest.mark.django_db
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    notifications=filters, params=st.none() | st.dictionaries(st.text(max_size=8), json_values, max_size=2)
)
def test_any_listen_filter_is_a_stream_or_400_and_32602_never_500(
    fuzz_token: str, notifications: Any, params: Any
) -> None:
    client = ModernClient(fuzz_token)
    body = {**(params or {}), "notifications": notifications} if params is not None else None
    if body is None:
        response = client.request("subscriptions/listen")  # no notifications at all
    else:
        response = client.request("subscriptions/listen", {k: v for k, v in body.items() if k != "_meta"})
    assert response.status_code in (200, 400), (response.status_code, notifications)
    if response.status_code == 200:
        assert response["Content-Type"] == "text/event-stream"
        response.loop_stream.__self__.release()
    else:
        error = response.json()["error"]
        assert error["code"] == -32602 and isinstance(error["message"], str)
