"""Property-based bad input for ``/ws/<slug>`` (hypothesis), through Django's test client.

Thousands of generated requests (bodies, JSON-RPC shapes, ids, params, headers, content types, sizes,
session ids, MCP-Protocol-Version values, tokens: valid, rate-limited, revoked, expired, malformed, unknown,
of another workspace) must each get exactly the status the oracle (tests/properties/oracle.py) documents,
a JSON-RPC body where one is due, never a 5xx and never a traceback in the logs.

Reproducible: ``derandomize=True`` and no example database, so CI runs the same examples every time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import sessions
from gateway.services import server_create
from tests.conftest import Team
from tests.e2e.upstreams import parse_sse
from tests.factories import MemberFactory, UserFactory, WorkspaceFactory, make_token
from tests.gateway.helpers import messages_of
from tests.properties.oracle import ACCEPTS, Case, allowed_statuses
from tokens import format as token_format
from tokens.models import Token
from tokens.services import token_revoke
from workspaces.models import Member

pytestmark = pytest.mark.django_db
MAX_BODY = 4096
# Examples per test; the four tests together send 2,600 requests (asserted below).
EXAMPLES = {"bodies": 900, "headers": 700, "tokens": 500, "mixed": 500}
PROPERTY_SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
sent = {"requests": 0}


@dataclass
class World:
    """What the generated requests can refer to, made once per test (examples share it)."""

    client: Client
    tokens: dict[str, str]
    valid_session: str
    other_session: str
    token_ids: dict[str, int]
    workspace_slug: str


@pytest.fixture
def world(team: Team, py_upstream: Any, settings: Any, caplog: Any) -> Iterator[World]:
    settings.GATEWAY_MAX_BODY_BYTES = MAX_BODY
    settings.GATEWAY_AUTH_FAILURE_LIMIT = (10**9, 60)  # the throttle has its own tests; here it would blur
    type(team.workspace).objects.filter(pk__in=[team.workspace.pk, team.other.pk]).update(
        rate_limit_per_minute=10**6
    )
    server_create(workspace=team.workspace, actor=team.alice.user, name="Py", slug="py", url=py_upstream.url)
    tight = WorkspaceFactory(name="Tight", slug="tight", rate_limit_per_minute=1)
    tight_member = MemberFactory(
        workspace=tight, user=UserFactory(username="t@example.com"), role=Member.Role.OWNER
    )
    valid, other_token = make_token(team.bob), make_token(team.alice)
    revoked = make_token(team.bob, name="revoked")
    token_revoke(token=revoked.token, actor=team.alice.user)
    expired = make_token(team.bob, name="expired")
    Token.objects.filter(pk=expired.token.pk).update(expires_at=timezone.now() - timedelta(seconds=5))
    tight_token, charlie = make_token(tight_member), make_token(team.charlie)
    client = Client()
    for _ in range(2):  # use up the tight workspace's one request a minute
        client.post(
            "/ws/tight",
            b"{}",
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {tight_token.raw}",
        )
    valid_session = sessions.create(
        token_id=valid.token.pk, workspace_id=team.workspace.pk, protocol_version="2025-11-25"
    )
    other_session = sessions.create(
        token_id=other_token.token.pk, workspace_id=team.workspace.pk, protocol_version="2025-11-25"
    )
    yield World(
        client=client,
        tokens={
            "valid": valid.raw,
            "tight": tight_token.raw,
            "revoked": revoked.raw,
            "expired": expired.raw,
            "other_workspace": charlie.raw,
            "unknown": token_format.generate(),
        },
        valid_session=valid_session.id,
        other_session=other_session.id,
        token_ids={
            "valid": valid.token.pk,
            "tight": tight_token.token.pk,
            "other_workspace": charlie.token.pk,
        },
        workspace_slug=team.workspace.slug,
    )


# -- strategies ----------------------------------------------------------------------------------------------
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
ids = (
    st.none()
    | st.integers(-(2**63), 2**63)
    | st.text(max_size=30)
    | st.floats(allow_nan=False)
    | st.booleans()
    | st.lists(st.integers(), max_size=2)
)
METHODS = [
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "logging/setLevel",
    "server/discover",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "resources/list",
    "prompts/get",
]
TOOL_NAMES = ["py__add", "py__echo", "py__fail", "py__math_mul", "nope__tool", "", "py__"]


@st.composite
def params_for(draw: st.DrawFn, method: Any) -> Any:
    if method == "initialize":
        return draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "protocolVersion": st.sampled_from(
                        ["2025-11-25", "2025-06-18", "2025-03-26", "2026-07-28", "1.0"]
                    )
                    | json_values,
                    "capabilities": json_values,
                    "clientInfo": json_values,
                },
            )
        )
    if method == "tools/call":
        return draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "name": st.sampled_from(TOOL_NAMES) | json_values,
                    "arguments": st.fixed_dictionaries({"a": st.integers(-5, 5), "b": st.integers(-5, 5)})
                    | st.fixed_dictionaries({"text": st.text(max_size=20)})
                    | st.fixed_dictionaries({"message": st.text(max_size=20)})
                    | json_values,
                    "_meta": json_values,
                },
            )
        )
    if method == "tools/list":
        return draw(st.fixed_dictionaries({}, optional={"cursor": json_values}))
    return draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3))


@st.composite
def jsonrpc_objects(draw: st.DrawFn) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    jsonrpc = draw(st.sampled_from(["2.0", "2.0", "2.0", "1.0", 2.0, None, "missing"]))
    if jsonrpc != "missing":
        obj["jsonrpc"] = jsonrpc
    shape = draw(st.sampled_from(["request", "request", "notification", "result", "error", "neither"]))
    if shape in ("request", "notification"):
        method = draw(st.sampled_from(METHODS) | st.text(max_size=20) | json_scalars)
        obj["method"] = method
        if draw(st.booleans()):
            obj["params"] = draw(params_for(method)) if draw(st.integers(0, 4)) else draw(json_values)
    if shape in ("request", "result", "error") or draw(st.integers(0, 9)) == 0:
        obj["id"] = (
            draw(st.integers(0, 10**6) | st.text(min_size=1, max_size=12))
            if draw(st.integers(0, 3))
            else draw(ids)
        )
    if shape == "result":
        obj["result"] = draw(st.dictionaries(st.text(max_size=5), json_values, max_size=2) | json_values)
    if shape == "error":
        obj["error"] = draw(
            st.fixed_dictionaries({"code": st.integers(-40000, 0), "message": st.text(max_size=10)})
            | json_values
        )
    if draw(st.integers(0, 6)) == 0:
        obj["pad"] = "x" * draw(st.integers(0, MAX_BODY + 1500))
    return obj


bodies = (
    jsonrpc_objects().map(lambda o: json.dumps(o).encode())
    | st.lists(jsonrpc_objects(), max_size=3).map(lambda o: json.dumps(o).encode())  # batches
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=64)
    | st.text(max_size=64).map(lambda t: t.encode("utf-8", "surrogatepass"))
    | jsonrpc_objects().map(lambda o: json.dumps(o).encode()[: max(1, len(json.dumps(o)) // 2)])  # cut off
    | st.sampled_from(
        [
            b"",
            b"{",
            b"[]",
            b"null",
            b'"2.0"',
            b'{"jsonrpc":"2.0","id":1,"method":"ping"} x',
            b"\xef\xbb\xbf{}",
        ]
    )
)
ORIGINS = {
    None: True,
    "http://testserver": True,
    "http://testserver/": True,
    "https://evil.example": False,
    "null": False,
}
VERSIONS = [
    None,
    "",
    "2025-11-25",
    "2025-06-18",
    "2025-03-26",
    " 2025-11-25 ",
    "2026-07-28",
    "2024-01-01",
    "latest",
]
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "",
    "multipart/form-data; boundary=x",
]


@st.composite
def cases(
    draw: st.DrawFn,
    world: World,
    *,
    vary_body: bool = True,
    vary_headers: bool = True,
    vary_tokens: bool = True,
) -> Case:
    token_kind = draw(
        st.sampled_from(
            ["valid"] * 6
            + [
                "tight",
                "missing",
                "malformed",
                "unknown",
                "revoked",
                "expired",
                "other_workspace",
                "scheme",
                "random",
            ]
        )
        if vary_tokens
        else st.just("valid")
    )
    if token_kind == "missing":
        authorization = None
    elif token_kind == "scheme":
        authorization = f"Basic {world.tokens['valid']}"
    elif token_kind == "malformed":
        raw = world.tokens["valid"]
        authorization = "Bearer " + draw(
            st.sampled_from([raw[:-1], raw + "x", raw[:-1] + ("A" if raw[-1] != "A" else "B"), "mwt_", ""])
        )
    elif token_kind == "random":
        authorization = draw(st.text(max_size=60))
    else:
        authorization = f"Bearer {world.tokens[token_kind]}"
    if token_kind in ("scheme", "random", "malformed"):
        token_kind = "malformed"  # none of these can be a valid token
    slug = world.workspace_slug if token_kind != "tight" else "tight"
    if vary_tokens and draw(st.integers(0, 9)) == 0:
        slug = draw(st.sampled_from(["charlies", "no-such-workspace", "tight", world.workspace_slug]))
    method = "POST"
    if vary_headers and draw(st.integers(0, 14)) == 0:
        method = draw(st.sampled_from(["GET", "PUT", "PATCH", "DELETE", "DELETE"]))
    body = (
        draw(bodies)
        if vary_body
        else json.dumps({"jsonrpc": "2.0", "id": 1, "method": draw(st.sampled_from(METHODS))}).encode()
    )
    origin = draw(st.sampled_from(list(ORIGINS))) if vary_headers and draw(st.integers(0, 5)) == 0 else None
    if vary_headers:
        accept = draw(st.sampled_from(list(ACCEPTS)) | st.text(max_size=30))
    else:
        accept = "application/json, text/event-stream"
    version = draw(st.sampled_from(VERSIONS) | st.text(max_size=20)) if vary_headers else "2025-11-25"
    session_kind = draw(
        st.sampled_from(["valid"] * 5 + ["none", "empty", "unknown", "other_token", "random", "fresh"])
    )
    if session_kind == "fresh" and method != "DELETE":
        session_kind = "valid"
    elif session_kind == "valid" and method == "DELETE":
        session_kind = "fresh"  # a DELETE ends its session: never the one the other examples share
    session = {
        "none": None,
        "empty": "",
        "valid": world.valid_session,
        "other_token": world.other_session,
        "unknown": "s" * 43,
    }.get(session_kind)
    if session_kind == "random":
        session = draw(st.text(min_size=1, max_size=200))
        session_kind = "unknown" if session not in (world.valid_session,) else "valid"
    content_length = None
    if vary_headers and draw(st.integers(0, 19)) == 0:
        content_length = draw(st.sampled_from(["abc", "-1", str(MAX_BODY + 1), "10**9", "0x10", str(10**12)]))
    headers = {"CONTENT_TYPE": draw(st.sampled_from(CONTENT_TYPES))} if vary_headers else {}
    if vary_headers and draw(st.integers(0, 9)) == 0:
        headers["HTTP_MCP_METHOD"] = draw(st.text(max_size=10))
        headers["HTTP_X_FORWARDED_FOR"] = draw(st.text(max_size=20))
    return Case(
        method=method,
        slug=slug,
        token_kind=token_kind,
        authorization=authorization,
        origin=origin,
        origin_allowed=ORIGINS[origin],
        content_length=content_length,
        body=body,
        accept=accept,
        version=version,
        session_kind=session_kind,
        session=session,
        headers=headers,
    )


# -- the property --------------------------------------------------------------------------------------------
def send(world: World, case: Case) -> Any:
    extra: dict[str, str] = dict(case.headers)
    for name, value in (
        ("HTTP_AUTHORIZATION", case.authorization),
        ("HTTP_ORIGIN", case.origin),
        ("HTTP_ACCEPT", case.accept),
        ("HTTP_MCP_PROTOCOL_VERSION", case.version),
        ("HTTP_MCP_SESSION_ID", case.session),
    ):
        if value is not None:
            extra[name] = value
    if case.content_length is not None:
        extra["CONTENT_LENGTH"] = case.content_length
    if case.session_kind == "fresh":
        token_id = world.token_ids.get(case.token_kind, world.token_ids["valid"])
        extra["HTTP_MCP_SESSION_ID"] = sessions.create(
            token_id=token_id, workspace_id=0, protocol_version="2025-11-25"
        ).id
    content_type = extra.pop("CONTENT_TYPE", "application/json")
    sent["requests"] += 1
    return world.client.generic(
        case.method, f"/ws/{case.slug}", case.body, content_type=content_type, **extra
    )


def replies(response: Any) -> list[dict[str, Any]]:
    """The JSON-RPC messages of a reply: JSON, a one-event SSE body, or an SSE stream."""
    if not response.streaming and response["Content-Type"].startswith("text/event-stream"):
        return parse_sse(response.content.decode())
    return messages_of(response)


def check(world: World, case: Case, caplog: Any) -> None:
    caplog.clear()
    response = send(world, case)
    status = response.status_code
    assert status < 500, (status, case)
    allowed = allowed_statuses(case, max_body=MAX_BODY, workspace_slug=world.workspace_slug)
    assert status in allowed, (status, allowed, case, response.content[:300])
    if (
        case.method == "GET" and status == 200
    ):  # a stream, run by the event loop (not here): give its slot back
        assert response["Content-Type"] == "text/event-stream" and response.content == b""
        response.loop_stream.__self__.lease.release()
    elif status in (202, 204):
        assert response.content == b""
    elif status != 405 or response.content:
        final = replies(response)[-1]
        assert final["jsonrpc"] == "2.0" and ("result" in final) != ("error" in final), final
        if "error" in final:
            assert type(final["error"]["code"]) is int and isinstance(final["error"]["message"], str)
        if status == 401:
            assert response["WWW-Authenticate"].startswith('Bearer realm="aerostack"')
    problems = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not problems, [r.getMessage() for r in problems]
    assert "Traceback" not in caplog.text


@settings(PROPERTY_SETTINGS, max_examples=EXAMPLES["bodies"])
@given(data=st.data())
def test_bodies_and_json_rpc_shapes(world: World, caplog: Any, data: st.DataObject) -> None:
    check(world, data.draw(cases(world, vary_headers=False, vary_tokens=False)), caplog)


@settings(PROPERTY_SETTINGS, max_examples=EXAMPLES["headers"])
@given(data=st.data())
def test_headers_sizes_and_sessions(world: World, caplog: Any, data: st.DataObject) -> None:
    check(world, data.draw(cases(world, vary_body=False, vary_tokens=False)), caplog)


@settings(PROPERTY_SETTINGS, max_examples=EXAMPLES["tokens"])
@given(data=st.data())
def test_tokens_and_workspaces(world: World, caplog: Any, data: st.DataObject) -> None:
    check(world, data.draw(cases(world, vary_body=False, vary_headers=False)), caplog)


@settings(PROPERTY_SETTINGS, max_examples=EXAMPLES["mixed"])
@given(data=st.data())
def test_everything_at_once(world: World, caplog: Any, data: st.DataObject) -> None:
    check(world, data.draw(cases(world)), caplog)


def test_the_suite_sends_at_least_2000_requests() -> None:
    assert sum(EXAMPLES.values()) >= 2000
