"""Property-based run over the OpenAPI schema (hypothesis): every operation the schema describes gets
generated path, query and JSON-body input, as the owner, an admin, a member and a stranger with API keys.

The oracle: never a 5xx; every 4xx has the one error body; a 2xx of a JSON operation is JSON. Bodies are drawn
from the schema's own property names with values of any JSON type (so both well-formed and ill-typed
requests are made), or as any JSON document at all.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import key_for
from tests.conftest import Team
from tests.factories import make_token
from tests.gateway.conftest import CLOSED_URL, make_server, with_tools

pytestmark = pytest.mark.django_db
SCHEMA = SchemaGenerator().get_schema(request=None, public=True)
OPERATIONS = [
    (path, method.upper(), operation)
    for path, item in SCHEMA["paths"].items()
    for method, operation in item.items()
    if method in ("get", "post", "patch", "put", "delete")
]
chars = st.characters(exclude_categories=("Cs",))
text = st.text(chars, max_size=30)
scalars = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | text
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)
PERSONAS = ("alice", "amy", "bob", "charlie")


def _body_strategy(operation: dict[str, Any]) -> st.SearchStrategy[Any]:
    content = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if content is None:
        return st.just(None)
    ref = content["schema"].get("$ref", "")
    component = SCHEMA["components"]["schemas"].get(ref.rsplit("/", 1)[-1], {})
    names = list(component.get("properties", {}))
    shaped = (
        st.fixed_dictionaries({}, optional={name: json_values for name in names}) if names else st.just({})
    )
    return st.one_of(shaped, shaped, json_values)


def _query_strategy(operation: dict[str, Any]) -> st.SearchStrategy[dict[str, str]]:
    names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
    value = st.one_of(
        text,
        st.integers(-5, 10**6).map(str),
        st.sampled_from(["active", "revoked", "csv", "jsonl", "2026-12-01T00:00:00"]),
    )
    return st.fixed_dictionaries({}, optional={name: value for name in names})


def _path_values(path: str, team: Team, ids: dict[str, int]) -> st.SearchStrategy[str]:
    slug = st.sampled_from([team.workspace.slug, team.other.slug, "no-such-workspace"])
    number = st.one_of(st.sampled_from(list(ids.values())), st.integers(0, 2**31))
    tool = st.one_of(
        st.sampled_from(["add", "echo", "math.mul"]),
        st.text(st.characters(categories=("L", "N")), min_size=1, max_size=10),
    )

    def build(parts: tuple[str, int, str]) -> str:
        chosen_slug, chosen_id, chosen_tool = parts
        return (
            path.replace("{slug}", chosen_slug)
            .replace("{tool}", chosen_tool)
            .replace("{token_id}", str(chosen_id))
            .replace("{member_id}", str(chosen_id))
            .replace("{invite_id}", str(chosen_id))
            .replace("{server_id}", str(chosen_id))
        )

    return st.tuples(slug, number, tool).map(build)


def test_the_schema_has_operations() -> None:
    assert len(OPERATIONS) >= 28  # the run below covers the whole API, not a few endpoints


@pytest.mark.parametrize(
    ("path", "method", "operation"), OPERATIONS, ids=[f"{m} {p}" for p, m, _ in OPERATIONS]
)
def test_no_generated_request_gets_a_5xx(
    team: Team, path: str, method: str, operation: dict[str, Any]
) -> None:
    server = with_tools(make_server(team.alice, url=CLOSED_URL))
    token = make_token(team.bob, name="Bob Cursor").token
    ids = {"server": server.pk, "token": token.pk, "member": team.bob.pk}
    keys = {name: key_for(getattr(team, name)) for name in PERSONAS}
    client = Client()

    @settings(
        derandomize=True,
        database=None,
        deadline=None,
        max_examples=30,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        url=_path_values(path, team, ids),
        query=_query_strategy(operation),
        body=_body_strategy(operation),
        persona=st.sampled_from(PERSONAS),
    )
    def run(url: str, query: dict[str, str], body: Any, persona: str) -> None:
        headers = {"HTTP_AUTHORIZATION": f"Bearer {keys[persona]}"}
        if query:
            url = f"{url}?{'&'.join(f'{k}={v}' for k, v in _encoded(query))}"
        if body is None:
            response = getattr(client, method.lower())(url, **headers)
        else:
            response = getattr(client, method.lower())(
                url, json.dumps(body), content_type="application/json", **headers
            )
        assert response.status_code < 500, (method, url, body, response.content[:300])
        if response.status_code >= 400:
            payload = response.json()
            assert set(payload) == {"error"} and set(payload["error"]) == {"code", "message", "fields"}, (
                payload
            )

    run()


def _encoded(query: dict[str, str]) -> list[tuple[str, str]]:
    from urllib.parse import quote

    return [(quote(key), quote(value, safe="")) for key, value in query.items()]
