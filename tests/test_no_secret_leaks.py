"""After a full token flow the raw token is nowhere: not in any table, not in any log line, not in SQL."""

from __future__ import annotations

import logging
import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from tests.conftest import Team, login

pytestmark = pytest.mark.django_db


def dump_database() -> str:
    """Every row of every table, as text."""
    chunks = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608 - table names from introspection
            chunks.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(chunks)


def test_it_keeps_the_raw_token_out_of_database_logs_and_sql(
    client: Client, team: Team, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    login(client, team.alice)
    with CaptureQueriesContext(connection) as queries:
        body = client.post(
            "/workspaces/acme-tools/tokens/new/", {"name": "Alice Cursor", "expires": "86400"}
        ).content.decode()
        match = re.search(r"mwt_[0-9A-Za-z]{36}", body)
        assert match
        raw = match.group(0)
        client.get("/workspaces/acme-tools/tokens/")
        token_id = re.search(
            r'id="token-(\d+)"', client.get("/workspaces/acme-tools/tokens/").content.decode()
        )
        assert token_id
        client.post(f"/workspaces/acme-tools/tokens/{token_id.group(1)}/revoke/")
    assert raw not in dump_database()
    assert raw[4:-6] not in dump_database()  # not even the random part alone
    assert all(raw not in str(query) for query in queries.captured_queries)
    assert raw not in caplog.text
    assert "token.create" in dump_database()  # the dump did see the audit rows: the search is real


def test_it_keeps_tokens_and_upstream_credentials_out_of_everything_after_gateway_use(
    team: Team, py_upstream: object, caplog: pytest.LogCaptureFixture
) -> None:
    from gateway.services import server_create
    from tests.factories import make_token
    from tests.gateway.helpers import McpTestClient

    caplog.set_level(logging.DEBUG)
    credential = "upstream-credential-never-logged"
    with CaptureQueriesContext(connection) as queries:
        server_create(
            workspace=team.workspace,
            actor=team.alice.user,
            name="Py",
            slug="py",
            url=py_upstream.url,
            credential_kind="bearer",
            credential=credential,
        )  # type: ignore[attr-defined]
        raw = make_token(team.bob).raw
        client = McpTestClient(raw)
        client.initialize()
        client.request("tools/list")
        client.request("tools/call", {"name": "py__add", "arguments": {"a": 1, "b": 2}})
        client.request("tools/call", {"name": "py__nope"})
        McpTestClient(raw[:-1] + ("A" if raw[-1] != "A" else "B")).request(
            "ping"
        )  # a refused, mistyped token
    everything = dump_database() + caplog.text + "\n".join(str(q) for q in queries.captured_queries)
    for secret in (raw, raw[4:-6], credential):
        assert secret not in everything
    assert "tools/call" in dump_database()  # the usage rows are there: the search is real
