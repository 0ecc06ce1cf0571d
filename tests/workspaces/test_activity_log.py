"""The Activity tab: every event with actor, time, target and a sentence; filters; pages; who sees what."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from gateway.services import server_delete, server_set_enabled, server_update, tool_set_enabled
from tests.conftest import Team, login
from tests.factories import make_token
from tests.gateway.conftest import make_server, with_tools
from tokens.services import token_revoke, token_rotate
from workspaces import activity
from workspaces.models import AuditEvent
from workspaces.services import audit_record, ownership_transfer, workspace_update

pytestmark = pytest.mark.django_db
URL = "/workspaces/acme-tools/activity/"


def _sentences(body: str) -> list[str]:
    return re.findall(r'<td data-label="What">(.*?)</td>', body, re.S)


def _actions(body: str) -> list[str]:
    return re.findall(r'data-action="([^"]+)"', body)


def record_the_other_engineers_actions(team: Team) -> None:
    """The member and invite actions, as the member services record them."""
    alice, bob = team.alice.user, team.bob.user
    ws = team.workspace
    audit_record(
        workspace=ws,
        actor=alice,
        action="member.invite",
        target="dan@example.com",
        details={"email": "dan@example.com", "role": "admin"},
    )
    audit_record(
        workspace=ws,
        actor=alice,
        action="invite.resend",
        target="dan@example.com",
        details={"email": "dan@example.com"},
    )
    audit_record(
        workspace=ws,
        actor=alice,
        action="invite.revoke",
        target="dan@example.com",
        details={"email": "dan@example.com"},
    )
    audit_record(
        workspace=ws,
        actor=bob,
        action="member.join",
        target="bob@example.com",
        subject=bob,
        details={"role": "member"},
    )
    audit_record(
        workspace=ws,
        actor=alice,
        action="member.role_change",
        target="bob@example.com",
        subject=bob,
        details={"from": "member", "to": "admin"},
    )
    audit_record(
        workspace=ws,
        actor=alice,
        action="member.remove",
        target="bob@example.com",
        subject=bob,
        details={"tokens_revoked": 2},
    )
    audit_record(workspace=ws, actor=bob, action="member.leave", target="bob@example.com", subject=bob)


def every_action(team: Team) -> None:
    """One event of every action the product records, through the real services where they exist."""
    server = with_tools(make_server(team.alice))  # a tool switch needs a tool the server has
    server_update(server=server, actor=team.amy.user, url="https://mcp2.example.com/mcp")
    server_set_enabled(server=server, actor=team.amy.user, enabled=False)
    server_set_enabled(server=server, actor=team.amy.user, enabled=True)
    tool_set_enabled(server=server, actor=team.amy.user, tool="add", enabled=False)
    tool_set_enabled(server=server, actor=team.amy.user, tool="add", enabled=True)
    server_delete(server=server, actor=team.amy.user)
    created = make_token(team.bob, name="Bob Cursor", expires_in=3600)
    rotated = token_rotate(token=created.token, actor=team.amy.user, grace_seconds=0)
    token_revoke(token=rotated.token, actor=team.amy.user)
    workspace_update(actor=team.alice, name="Acme Platform", description="d", rate_limit_per_minute=30)
    workspace_update(actor=team.alice, name="Acme Platform", description="d", rate_limit_per_minute=None)
    record_the_other_engineers_actions(team)
    ownership_transfer(actor=team.alice, to=team.amy)


EXPECTED = {
    "workspace.create": "created the workspace",
    "server.create": "added server github (https://mcp.example.com)",
    "server.update": "changed server github (url)",
    "server.disable": "disabled server github",
    "server.enable": "enabled server github",
    "tool.disable": "turned off tool add of server github",
    "tool.enable": "turned on tool add of server github",
    "server.delete": "deleted server github",
    "token.create": "created token “Bob Cursor” (mwt_…{hint}) for bob@example.com, expiring after 3600 seconds",
    "token.rotate": (
        "rotated token “Bob Cursor” (mwt_…{hint} → mwt_…{successor}) of bob@example.com; "
        "the old one was revoked at once"
    ),
    "token.revoke": "revoked token “Bob Cursor” (mwt_…{successor}) of bob@example.com",
    "workspace.update": "set the rate limit to follow the server's setting",
    "member.invite": "invited dan@example.com as Admin",
    "invite.resend": "re-sent the invitation to dan@example.com",
    "invite.revoke": "revoked the invitation of dan@example.com",
    "member.join": "joined the workspace as Member",
    "member.role_change": "changed the role of bob@example.com from Member to Admin",
    "member.remove": "removed bob@example.com from the workspace and revoked their 2 tokens",
    "member.leave": "left the workspace",
    "ownership.transfer": "transferred ownership of the workspace to amy@example.com; alice@example.com is now an admin",
}


def test_every_action_has_a_readable_sentence(team: Team) -> None:
    # The team fixture builds its workspace with factories, which record no create event.
    audit_record(
        workspace=team.workspace, actor=team.alice.user, action="workspace.create", target="acme-tools"
    )
    every_action(team)
    hint = AuditEvent.objects.get(action="token.create").details["hint"].removeprefix("mwt_…")
    successor = AuditEvent.objects.get(action="token.rotate").details["successor_hint"].removeprefix("mwt_…")
    seen = {}
    for event in AuditEvent.objects.filter(workspace=team.workspace).order_by("id"):
        seen[event.action] = activity.summary(event)
    assert set(seen) == set(EXPECTED) == set(activity.ACTION_LABELS)
    for action, sentence in EXPECTED.items():
        assert seen[action] == sentence.format(hint=hint, successor=successor), action
    rename = AuditEvent.objects.filter(action="workspace.update").order_by("id").first()
    assert rename is not None and activity.summary(rename) == (
        "renamed the workspace from “Acme Tools” to “Acme Platform” and changed its description "
        "and set the rate limit to 30 requests per minute per token"
    )


def test_a_workspace_deletion_has_a_sentence_too(team: Team) -> None:
    event = audit_record(
        workspace=team.workspace, actor=team.alice.user, action="workspace.delete", target="acme-tools"
    )
    assert activity.sentence(event) == "alice@example.com deleted the workspace acme-tools"


def test_an_unknown_action_shows_its_raw_name(team: Team) -> None:
    event = audit_record(
        workspace=team.workspace, actor=team.alice.user, action="billing.upgrade", target="x"
    )
    assert activity.summary(event) == "billing.upgrade"
    assert activity.sentence(event) == "alice@example.com: billing.upgrade"
    odd = audit_record(
        workspace=team.workspace, actor=None, action="workspace.update", details={"changed": 5}
    )
    assert activity.summary(odd) == "workspace.update" and activity.actor_name(odd) == "A deleted user"


def test_it_lists_events_with_actor_time_target_and_sentence(client: Client, team: Team) -> None:
    created = make_token(team.bob, name="Bob Cursor")
    body = login(client, team.alice).get(URL).content.decode()
    row = re.search(r'<tr id="event-\d+" data-action="token.create">(.*?)</tr>', body, re.S)
    assert row is not None
    cells = row.group(1)
    assert "bob@example.com" in cells and f"token:{created.token.pk}" in cells
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT[^"]+">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d</time>', cells)
    assert f"created token “Bob Cursor” ({created.token.hint}) for bob@example.com, without expiry" in cells
    assert 'aria-current="page">Activity' in body


def test_it_filters_by_action_and_by_actor(client: Client, team: Team) -> None:
    every_action(team)
    login(client, team.alice)
    body = client.get(URL, {"action": "token.revoke"}).content.decode()
    assert _actions(body) == ["token.revoke"]
    body = client.get(URL, {"actor": team.amy.user_id}).content.decode()
    assert set(_actions(body)) == {
        "server.update",
        "server.disable",
        "server.enable",
        "tool.disable",
        "tool.enable",
        "server.delete",
        "token.rotate",
        "token.revoke",
    }
    body = client.get(URL, {"action": "member.leave", "actor": team.bob.user_id}).content.decode()
    assert _actions(body) == ["member.leave"]
    assert (
        "No events match these filters"
        in client.get(URL, {"action": "member.leave", "actor": team.amy.user_id}).content.decode()
    )


@pytest.mark.parametrize("query", [{"action": "no.such"}, {"actor": "abc"}, {"actor": "999999"}])
def test_it_refuses_bad_filters_beside_the_field(client: Client, team: Team, query: dict[str, str]) -> None:
    make_token(team.bob)
    response = login(client, team.alice).get(URL, query)
    assert response.status_code == 400 and "Select a valid choice" in response.content.decode()
    assert _actions(response.content.decode()) == []


def test_it_pages_fifty_at_a_time_and_keeps_the_filters(client: Client, team: Team) -> None:
    for n in range(120):
        audit_record(
            workspace=team.workspace, actor=team.alice.user, action="server.delete", target=f"server:s{n}"
        )
    audit_record(workspace=team.workspace, actor=team.alice.user, action="token.revoke", target="token:1")
    login(client, team.alice)
    first = client.get(URL, {"action": "server.delete"}).content.decode()
    assert len(_actions(first)) == 50 and "Page 1 of 3" in first and "server:s119" in first
    assert 'href="?action=server.delete&amp;page=2"' in first
    last = client.get(URL, {"action": "server.delete", "page": "3"}).content.decode()
    assert len(_actions(last)) == 20 and "server:s0<" in last and "Page 3 of 3" in last
    beyond = client.get(URL, {"action": "server.delete", "page": "99"}).content.decode()
    assert "Page 3 of 3" in beyond
    assert client.get(URL, {"page": "x"}).status_code == 200


def test_members_see_only_the_events_about_themselves(client: Client, team: Team) -> None:
    every_action(team)
    body = login(client, team.bob).get(URL).content.decode()
    mine = AuditEvent.objects.filter(workspace=team.workspace).filter(
        actor=team.bob.user
    ) | AuditEvent.objects.filter(workspace=team.workspace, subject=team.bob.user)
    assert sorted(_actions(body)) == sorted(e.action for e in mine)
    assert set(_actions(body)) == {
        "token.create",
        "token.rotate",
        "token.revoke",
        "member.join",
        "member.role_change",
        "member.remove",
        "member.leave",
    }
    assert "You see the events you did and the events about you." in body
    # Filtering cannot widen it.
    assert _actions(client.get(URL, {"action": "server.delete"}).content.decode()) == []


def test_admins_see_the_whole_log(client: Client, team: Team) -> None:
    every_action(team)
    body = login(client, team.amy).get(URL).content.decode()
    assert len(_actions(body)) == AuditEvent.objects.filter(workspace=team.workspace).count()


def test_it_never_shows_another_workspaces_events(client: Client, team: Team) -> None:
    make_token(team.charlie, name="Charlie's secret plan")
    assert "Charlie&#x27;s secret plan" not in login(client, team.alice).get(URL).content.decode()


def test_it_gives_strangers_404_and_redirects_anonymous_users(client: Client, team: Team) -> None:
    assert client.get(URL).status_code == 302
    assert login(client, team.charlie).get(URL).status_code == 404


def test_it_refuses_post(client: Client, team: Team) -> None:
    assert login(client, team.alice).post(URL).status_code == 405


def test_it_escapes_markup(client: Client, team: Team) -> None:
    make_token(team.bob, name="<img src=x onerror=alert(1)>")
    audit_record(
        workspace=team.workspace, actor=team.alice.user, action="<script>alert(2)</script>", target="<b>t</b>"
    )
    body = login(client, team.alice).get(URL).content.decode()
    assert "<img src=x" not in body and "&lt;img src=x onerror=alert(1)&gt;" in body
    assert "<script>alert(2)" not in body and "<b>t</b>" not in body and "&lt;b&gt;t&lt;/b&gt;" in body


def test_the_member_services_events_read_as_sentences(team: Team) -> None:
    """The member and invite events as the real services write them (not hand-made rows)."""
    from tests.factories import UserFactory
    from tests.workspaces.helpers import last_invite_secret
    from workspaces.services import (
        invite_accept,
        invite_resend,
        invite_revoke,
        invite_secret_hash,
        member_invite,
        member_leave,
        member_remove,
        member_set_role,
    )

    base = "http://testserver"
    sent = member_invite(actor=team.alice, email="dan@example.com", role="admin", base_url=base)
    invite_resend(actor=team.alice, invite=sent.invite, base_url=base)
    invite_revoke(actor=team.alice, invite=sent.invite)
    erin = UserFactory(username="erin@example.com")
    member_invite(actor=team.alice, email="erin@example.com", role="member", base_url=base)
    joined = invite_accept(secret_hash=invite_secret_hash(last_invite_secret()), user=erin)
    member_set_role(actor=team.alice, member=team.bob, role="admin")
    make_token(team.bob, name="one")
    make_token(team.bob, name="two")
    member_remove(actor=team.alice, member=team.bob)
    member_leave(member=joined.member)
    seen = {
        event.action: activity.summary(event)
        for event in AuditEvent.objects.filter(workspace=team.workspace).order_by("id")
    }
    assert seen["member.invite"] == "invited erin@example.com as Member"
    assert seen["invite.resend"] == "re-sent the invitation to dan@example.com"
    assert seen["invite.revoke"] == "revoked the invitation of dan@example.com"
    assert seen["member.join"] == "joined the workspace as Member"
    assert seen["member.role_change"] == "changed the role of bob@example.com from Member to Admin"
    assert seen["member.remove"] == "removed bob@example.com from the workspace and revoked their 2 tokens"
    assert seen["member.leave"] == "left the workspace"
