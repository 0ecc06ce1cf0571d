"""member_leave and the Leave button: anyone may leave, their tokens are revoked; the last owner may not."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.conftest import Team, login
from tests.factories import MemberFactory, UserFactory, make_token
from tests.gateway.helpers import McpTestClient
from tokens.models import Token
from workspaces.models import AuditEvent, Member
from workspaces.services import MemberError, member_leave

pytestmark = pytest.mark.django_db
URL = "/workspaces/acme-tools/members/leave/"


def test_a_member_leaves_and_their_tokens_stop_working(client: Client, team: Team) -> None:
    raw = make_token(team.bob).raw
    assert McpTestClient(raw).initialize().status_code == 200
    login(client, team.bob)
    page = client.get(URL)
    assert page.status_code == 200 and "Leave Acme Tools?" in page.content.decode()
    response = client.post(URL)
    assert response.status_code == 302 and response["Location"] == "/workspaces/"
    assert McpTestClient(raw).initialize().status_code == 401
    assert client.get("/workspaces/acme-tools/").status_code == 404
    assert not Member.objects.get(pk=team.bob.pk).is_current
    assert Token.objects.get(member=team.bob).revoked_by == team.bob.user
    event = AuditEvent.objects.get(action="member.leave")
    assert event.actor == team.bob.user and event.subject == team.bob.user
    assert AuditEvent.objects.get(action="token.revoke").details["reason"] == "member.leave"


def test_admins_and_owners_with_a_co_owner_may_leave(team: Team) -> None:
    member_leave(member=team.amy)
    MemberFactory(workspace=team.workspace, user=UserFactory(), role=Member.Role.OWNER)
    member_leave(member=team.alice)
    assert not Member.objects.get(pk=team.alice.pk).is_current


def test_the_last_owner_may_not_leave(client: Client, team: Team) -> None:
    with pytest.raises(MemberError, match="last owner"):
        member_leave(member=team.alice)
    login(client, team.alice)
    response = client.post(URL, follow=True)
    assert "is the last owner and cannot leave" in response.content.decode()
    assert Member.objects.get(pk=team.alice.pk).is_current
    assert not AuditEvent.objects.filter(action="member.leave").exists()


def test_strangers_get_404_and_anonymous_a_login(client: Client, team: Team) -> None:
    assert client.post(URL)["Location"].startswith("/accounts/login/")
    login(client, team.charlie)
    assert client.get(URL).status_code == 404 and client.post(URL).status_code == 404
    assert Member.objects.get(pk=team.charlie.pk).is_current


def test_it_needs_csrf(csrf_client: Client, team: Team) -> None:
    login(csrf_client, team.bob)
    assert csrf_client.post(URL).status_code == 403
    assert Member.objects.get(pk=team.bob.pk).is_current


def test_the_last_owner_is_told_before_trying(client: Client, team: Team) -> None:
    body = login(client, team.alice).get(URL).content.decode()
    assert "You are the last owner of Acme Tools" in body and 'type="submit" class="danger"' not in body
    body = login(Client(), team.amy).get(URL).content.decode()
    assert "last owner" not in body and "Leave workspace</button>" in body
