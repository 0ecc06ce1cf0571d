"""The activity log keeps an upstream URL's origin only: hosted MCP servers put secrets in paths and queries."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps
from django.test import Client

from gateway.services import server_create, url_for_audit
from tests.conftest import Team, login
from workspaces.models import AuditEvent

pytestmark = pytest.mark.django_db

SECRET = "k3y-in-the-url-0123456789"


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        (f"https://mcp.example.com/mcp/{SECRET}/sse", "https://mcp.example.com"),
        (f"https://MCP.example.com:443/mcp?api_key={SECRET}", "https://mcp.example.com"),
        (f"http://127.0.0.1:8931/mcp?key={SECRET}", "http://127.0.0.1:8931"),
        (f"http://[::1]:9000/{SECRET}", "http://[::1]:9000"),
    ],
)
def test_only_the_origin_is_kept(url: str, origin: str) -> None:
    assert url_for_audit(url) == origin


def test_adding_a_server_logs_its_origin_not_its_secret(team: Team, client: Client) -> None:
    server_create(
        workspace=team.workspace,
        actor=team.alice.user,
        name="Hosted",
        slug="hosted",
        url=f"http://127.0.0.1:9/mcp/{SECRET}?token={SECRET}",
    )
    event = AuditEvent.objects.get(action="server.create")
    assert event.details["url"] == "http://127.0.0.1:9"
    assert SECRET not in str(event.details)
    page = login(client, team.alice).get("/workspaces/acme-tools/activity/").content.decode()
    assert "http://127.0.0.1:9" in page and SECRET not in page


def test_the_migration_strips_old_rows(team: Team) -> None:
    old = AuditEvent.objects.create(
        workspace=team.workspace,
        actor=team.alice.user,
        action="server.create",
        target="server:hosted",
        details={"url": f"https://mcp.example.com/x/{SECRET}", "credential": "none"},
    )
    untouched = AuditEvent.objects.create(
        workspace=team.workspace, actor=team.alice.user, action="server.update", target="server:x", details={}
    )
    migration = importlib.import_module("workspaces.migrations.0007_audit_server_url_origin")
    migration.forwards(apps, None)
    old.refresh_from_db()
    assert old.details == {"url": "https://mcp.example.com", "credential": "none"}
    untouched.refresh_from_db()
    assert untouched.details == {}
