"""Members, invites, servers and tools, the audit log and usage through the API: happy paths and bad input,
each answered by the same services (and audit rows) as the dashboard."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone

from gateway.models import Server
from tests.analytics.helpers import record_usage
from tests.api.conftest import as_key, assert_error
from tests.conftest import Team
from tests.factories import make_token
from tests.gateway.conftest import CLOSED_URL, make_server, with_tools
from tokens.models import Token
from workspaces.models import AuditEvent, Invite, Member

pytestmark = pytest.mark.django_db
WS = "/api/v1/workspaces/acme-tools"


# -- members ---------------------------------------------------------------------------------------------
def test_it_lists_members_with_their_numbers(team: Team) -> None:
    make_token(team.bob, name="Bob Cursor")
    rows = as_key(team.bob).get(f"{WS}/members").json()
    assert rows["count"] == 3
    bob = next(row for row in rows["results"] if row["username"] == "bob@example.com")
    assert bob["role"] == "member" and bob["active_tokens"] == 1 and bob["id"] == team.bob.pk
    admins = as_key(team.bob).get(f"{WS}/members", role="admin").json()["results"]
    assert [row["username"] for row in admins] == ["amy@example.com"]
    assert "role" in assert_error(as_key(team.bob).get(f"{WS}/members", role="boss"), 400)["fields"]


def test_it_changes_a_role_and_records_it(team: Team) -> None:
    response = as_key(team.amy).patch(f"{WS}/members/{team.bob.pk}", {"role": "admin"})
    assert response.status_code == 200 and response.json()["role"] == "admin"
    assert AuditEvent.objects.filter(action="member.role_change", actor=team.amy.user).exists()
    assert (
        "role"
        in assert_error(as_key(team.alice).patch(f"{WS}/members/{team.bob.pk}", {"role": "x"}), 400)["fields"]
    )
    # An admin may not make anyone an owner (the service's rule: 403 with its sentence).
    refused = assert_error(as_key(team.amy).patch(f"{WS}/members/{team.bob.pk}", {"role": "owner"}), 403)
    assert "owner" in refused["message"]
    assert_error(as_key(team.alice).patch(f"{WS}/members/{team.charlie.pk}", {"role": "admin"}), 404)


def test_it_removes_a_member_and_revokes_their_tokens(team: Team) -> None:
    created = make_token(team.bob, name="Bob Cursor")
    assert as_key(team.amy).delete(f"{WS}/members/{team.bob.pk}").status_code == 204
    assert Token.objects.get(pk=created.token.pk).revoked_at is not None
    assert Member.objects.get(pk=team.bob.pk).ended_at is not None
    assert_error(as_key(team.amy).delete(f"{WS}/members/{team.bob.pk}"), 404)  # no longer a member
    assert "leave" in assert_error(as_key(team.amy).delete(f"{WS}/members/{team.amy.pk}"), 400)["message"]


# -- invites ---------------------------------------------------------------------------------------------
def test_it_invites_resends_and_revokes(team: Team) -> None:
    client = as_key(team.amy)
    sent = client.post(f"{WS}/invites", {"email": "Erin@Example.com", "role": "admin"})
    assert sent.status_code == 201
    body = sent.json()
    assert body["invite"]["email"] == "erin@example.com" and body["delivered"] is True
    assert len(mail.outbox) == 1
    invite_id = body["invite"]["id"]
    assert [row["id"] for row in client.get(f"{WS}/invites").json()["results"]] == [invite_id]
    again = client.post(f"{WS}/invites", {"email": "erin@example.com"})
    assert "already has a pending invite" in assert_error(again, 400)["fields"]["email"]
    assert client.post(f"{WS}/invites/{invite_id}/resend").status_code == 200
    assert len(mail.outbox) == 2
    assert client.delete(f"{WS}/invites/{invite_id}").status_code == 204
    assert Invite.objects.get(pk=invite_id).revoked_at is not None
    assert_error(client.delete(f"{WS}/invites/{invite_id}"), 404)
    assert_error(client.post(f"{WS}/invites/{invite_id}/resend"), 404)
    assert client.get(f"{WS}/invites").json()["count"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [({"email": "not-an-address"}, "email"), ({"email": "a@b.co", "role": "owner"}, "role"), ({}, "email")],
)
def test_it_refuses_bad_invites(team: Team, body: dict[str, Any], field: str) -> None:
    assert field in assert_error(as_key(team.alice).post(f"{WS}/invites", body), 400)["fields"]


# -- servers and tools -----------------------------------------------------------------------------------
def test_it_adds_changes_disables_and_deletes_a_server(team: Team) -> None:
    client = as_key(team.amy)
    added = client.post(
        f"{WS}/servers",
        {"name": "GitHub", "url": CLOSED_URL, "credential_kind": "bearer", "credential": "ghp_secret_value"},
    )
    assert added.status_code == 201, added.content
    server = added.json()
    assert server["slug"] == "github" and server["has_credential"] is True
    assert "ghp_secret_value" not in added.content.decode() and "credential" not in server
    assert "ghp_secret_value" not in Server.objects.get(pk=server["id"]).credential_encrypted
    url = f"{WS}/servers/{server['id']}"
    assert client.get(f"{WS}/servers").json()["results"][0]["id"] == server["id"]
    renamed = client.patch(url, {"name": "GitHub Enterprise", "timeout_seconds": 30})
    assert renamed.json()["name"] == "GitHub Enterprise" and renamed.json()["timeout_seconds"] == 30
    assert renamed.json()["has_credential"] is True  # a change without a credential keeps it
    assert client.patch(url, {"enabled": False}).json()["enabled"] is False
    assert AuditEvent.objects.filter(action="server.disable").count() == 1
    assert client.patch(url, {"enabled": True}).json()["enabled"] is True
    assert client.delete(url).status_code == 204
    assert_error(client.get(url), 404)


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"name": "", "url": CLOSED_URL}, {"name"}),
        ({"name": "X", "url": "ftp://example.com"}, {"url"}),
        ({"name": "X", "url": CLOSED_URL, "slug": "Bad Slug!"}, {"slug"}),
        ({"name": "X", "url": CLOSED_URL, "credential_kind": "bearer"}, {"credential"}),
        (
            {
                "name": "X",
                "url": CLOSED_URL,
                "credential_kind": "header",
                "credential_header": "Host",
                "credential": "v",
            },
            {"credential_header"},
        ),
        ({"name": "X", "url": CLOSED_URL, "timeout_seconds": 0}, {"timeout_seconds"}),
        ({"name": "X", "url": CLOSED_URL, "credential_kind": "magic"}, {"credential_kind"}),
        ({"url": CLOSED_URL}, {"name"}),
    ],
)
def test_it_refuses_bad_servers_with_the_services_messages(
    team: Team, body: dict[str, Any], fields: set[str]
) -> None:
    error = assert_error(as_key(team.alice).post(f"{WS}/servers", body), 400, "invalid")
    assert fields <= set(error["fields"]), error
    assert not Server.objects.exists()


def test_a_taken_slug_is_a_field_error(team: Team) -> None:
    make_server(team.alice, url=CLOSED_URL)
    error = assert_error(
        as_key(team.alice).post(f"{WS}/servers", {"name": "G", "slug": "github", "url": CLOSED_URL}), 400
    )
    assert "slug" in error["fields"]


def test_it_lists_and_switches_tools(team: Team) -> None:
    server = with_tools(make_server(team.alice, url=CLOSED_URL))
    client = as_key(team.alice)
    tools = client.get(f"{WS}/servers/{server.pk}/tools").json()["results"]
    assert [(t["name"], t["gateway_name"], t["enabled"]) for t in tools][:2] == [
        ("add", "github__add", True),
        ("echo", "github__echo", True),
    ]
    switched = client.patch(f"{WS}/servers/{server.pk}/tools/add", {"enabled": False})
    assert switched.status_code == 200 and switched.json()["enabled"] is False
    assert Server.objects.get(pk=server.pk).disabled_tools == ["add"]
    assert (
        "tool"
        in assert_error(client.patch(f"{WS}/servers/{server.pk}/tools/rm_rf", {"enabled": False}), 400)[
            "fields"
        ]
    )
    assert "enabled" in assert_error(client.patch(f"{WS}/servers/{server.pk}/tools/add", {}), 400)["fields"]


def test_a_connection_test_reports_the_upstreams_tools(team: Team, py_upstream: Any) -> None:
    server = make_server(team.alice, url=py_upstream.url, slug="py", timeout_seconds=20)
    result = as_key(team.amy).post(f"{WS}/servers/{server.pk}/test").json()
    assert result["ok"] is True and result["tool_count"] > 0 and result["error"] == ""
    assert result["server"]["tool_count"] == result["tool_count"]


def test_a_failed_connection_test_says_why(team: Team) -> None:
    server = make_server(team.alice, url=CLOSED_URL)
    result = as_key(team.alice).post(f"{WS}/servers/{server.pk}/test").json()
    assert result["ok"] is False and result["error"]


# -- audit events ----------------------------------------------------------------------------------------
def test_it_lists_filters_and_exports_audit_events(team: Team) -> None:
    bobs = make_token(team.bob, name="Bob Cursor")
    make_token(team.alice, name="Alice CI")
    as_key(team.bob).post(f"/api/v1/workspaces/acme-tools/tokens/{bobs.token.pk}/revoke")
    owner = as_key(team.alice)
    events = owner.get(f"{WS}/audit-events").json()
    assert events["count"] == 3
    assert {"id", "created_at", "action", "actor", "subject", "target", "summary", "details"} <= set(
        events["results"][0]
    )
    assert events["results"][0]["action"] == "token.revoke"  # newest first
    assert owner.get(f"{WS}/audit-events", action="token.create").json()["count"] == 2
    assert owner.get(f"{WS}/audit-events", actor=team.bob.user.pk).json()["count"] == 2
    future = (timezone.now() + timedelta(hours=1)).isoformat()
    assert owner.get(f"{WS}/audit-events", since=future).json()["count"] == 0
    assert "since" in assert_error(owner.get(f"{WS}/audit-events", since="yesterday"), 400)["fields"]
    assert "actor" in assert_error(owner.get(f"{WS}/audit-events", actor="bob"), 400)["fields"]
    # A member reads the events by or about them only.
    assert as_key(team.bob).get(f"{WS}/audit-events").json()["count"] == 2
    csv = owner.get(f"{WS}/audit-events/export")
    assert csv.status_code == 200 and csv["Content-Type"].startswith("text/csv")
    text = b"".join(csv.streaming_content).decode()
    assert text.splitlines()[0].startswith("id,") and len(text.splitlines()) == 4
    jsonl = owner.get(f"{WS}/audit-events/export", type="jsonl", action="token.revoke")
    lines = b"".join(jsonl.streaming_content).decode().splitlines()
    assert [json.loads(line)["action"] for line in lines] == ["token.revoke"]
    assert "type" in assert_error(owner.get(f"{WS}/audit-events/export", type="xml"), 400)["fields"]


# -- usage -----------------------------------------------------------------------------------------------
def _usage(member: Member, tool: str, outcome: str, ms: float, days_ago: int = 0) -> None:
    record_usage(
        member,
        exposed_name=f"github__{tool}",
        created_at=timezone.now() - timedelta(days=days_ago),
        duration_ms=ms,
        outcome=outcome,
    )


def test_it_summarises_usage_per_tool_and_member(team: Team) -> None:
    _usage(team.bob, "add", "ok", 10)
    _usage(team.bob, "add", "ok", 30)
    _usage(team.bob, "add", "tool_error", 20)
    _usage(team.amy, "echo", "ok", 5)
    _usage(team.amy, "echo", "ok", 5, days_ago=30)  # outside the default 7 days
    summary = as_key(team.alice).get(f"{WS}/usage").json()
    assert summary["scope"] == "workspace" and summary["calls"] == 4 and summary["failures"] == 1
    assert summary["by_tool"][0] == {"key": "github__add", "calls": 3, "failures": 1, "average_ms": 20.0}
    assert {row["key"]: row["calls"] for row in summary["by_member"]} == {
        "bob@example.com": 3,
        "amy@example.com": 1,
    }
    month = (
        as_key(team.alice).get(f"{WS}/usage", since=(timezone.now() - timedelta(days=40)).isoformat()).json()
    )
    assert month["calls"] == 5
    own = as_key(team.bob).get(f"{WS}/usage").json()
    assert (
        own["scope"] == "own"
        and own["calls"] == 3
        and [r["key"] for r in own["by_member"]] == ["bob@example.com"]
    )
