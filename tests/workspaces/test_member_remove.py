"""member_remove and the Remove button: the membership ends, every token is revoked in the same transaction,
the gateway answers 401 on the very next request, the workspace answers 404, and the tokens stay listed."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.conftest import Team, login
from tests.factories import make_token
from tests.gateway.helpers import McpTestClient
from tokens.models import Token
from tokens.services import token_authenticate
from workspaces.models import AuditEvent, Member
from workspaces.permissions import NotAllowed
from workspaces.services import MemberError, member_remove

pytestmark = pytest.mark.django_db


def _url(member: Member) -> str:
    return f"/workspaces/acme-tools/members/{member.pk}/remove/"


def test_it_ends_the_membership_and_revokes_every_token(team: Team) -> None:
    laptop, ci = make_token(team.bob, name="laptop"), make_token(team.bob, name="ci")
    alices = make_token(team.alice)
    removed = member_remove(actor=team.amy, member=team.bob)
    assert removed.ended_at is not None and not Member.objects.current().filter(pk=team.bob.pk).exists()
    for created in (laptop, ci):
        token = Token.objects.get(pk=created.token.pk)
        assert token.revoked_at == removed.ended_at and token.revoked_by == team.amy.user
        assert token.member_id == team.bob.pk  # history keeps pointing at who held it
        assert not token_authenticate(raw=created.raw, workspace_slug="acme-tools").ok
    assert token_authenticate(raw=alices.raw, workspace_slug="acme-tools").ok
    event = AuditEvent.objects.get(action="member.remove")
    assert event.actor == team.amy.user and event.subject == team.bob.user
    assert event.target == f"member:{team.bob.pk}" and event.details["email"] == "bob@example.com"
    assert sorted(event.details["revoked_tokens"]) == sorted([laptop.token.pk, ci.token.pk])
    revocations = AuditEvent.objects.filter(action="token.revoke", subject=team.bob.user)
    assert revocations.count() == 2 and {e.details["reason"] for e in revocations} == {"member.remove"}


def test_the_gateway_answers_401_at_once_and_the_workspace_404(client: Client, team: Team) -> None:
    raw = make_token(team.bob).raw
    gateway = McpTestClient(raw)
    assert gateway.initialize().status_code == 200
    assert gateway.request("ping").status_code == 200
    bobs_browser = login(Client(), team.bob)
    assert bobs_browser.get("/workspaces/acme-tools/").status_code == 200

    login(client, team.alice)
    page = client.get(_url(team.bob))
    assert page.status_code == 200 and "Remove bob@example.com?" in page.content.decode()
    assert "1 active token" in page.content.decode()
    response = client.post(_url(team.bob))
    assert response.status_code == 302 and response["Location"] == "/workspaces/acme-tools/members/"

    assert gateway.request("ping").status_code == 401
    assert McpTestClient(raw).initialize().status_code == 401
    for path in (
        "/workspaces/acme-tools/",
        "/workspaces/acme-tools/tokens/",
        "/workspaces/acme-tools/members/",
    ):
        assert bobs_browser.get(path).status_code == 404
    assert "Acme Tools" not in bobs_browser.get("/workspaces/").content.decode()
    # His revoked token stays listed for audit, under his email.
    listing = client.get("/workspaces/acme-tools/tokens/").content.decode()
    assert "bob@example.com" in listing and ">Revoked<" in listing and "(removed)" in listing
    members = client.get("/workspaces/acme-tools/members/").content.decode()
    assert f'id="member-{team.bob.pk}"' not in members


def test_admins_remove_members_and_admins_but_not_owners(team: Team) -> None:
    from tests.factories import MemberFactory, UserFactory

    other_admin = MemberFactory(workspace=team.workspace, user=UserFactory(), role=Member.Role.ADMIN)
    member_remove(actor=team.amy, member=other_admin)
    with pytest.raises(NotAllowed):
        member_remove(actor=team.amy, member=team.alice)
    assert Member.objects.get(pk=team.alice.pk).is_current


def test_members_may_not_remove(client: Client, team: Team) -> None:
    with pytest.raises(NotAllowed):
        member_remove(actor=team.bob, member=team.amy)
    login(client, team.bob)
    assert client.get(_url(team.amy)).status_code == 403
    assert client.post(_url(team.amy)).status_code == 403
    assert Member.objects.get(pk=team.amy.pk).is_current and not AuditEvent.objects.filter(
        action="member.remove"
    )


def test_owners_remove_owners_and_the_last_owner_cannot_be_removed(team: Team) -> None:
    from tests.factories import MemberFactory, UserFactory

    second = MemberFactory(workspace=team.workspace, user=UserFactory(), role=Member.Role.OWNER)
    member_remove(actor=team.alice, member=second)
    assert not Member.objects.get(pk=second.pk).is_current
    # alice is the last owner now: admins may not remove owners, and she may only leave, which is refused
    # too (test_member_leave); two owners removing each other at once: test_member_remove_concurrently.
    with pytest.raises(NotAllowed):
        member_remove(actor=team.amy, member=team.alice)
    with pytest.raises(MemberError):
        member_remove(actor=team.alice, member=team.alice)
    assert (
        Member.objects.current().filter(workspace=team.workspace, role=Member.Role.OWNER).get() == team.alice
    )


def test_it_refuses_removing_yourself_and_strangers(team: Team) -> None:
    with pytest.raises(MemberError, match="leave"):
        member_remove(actor=team.alice, member=team.alice)
    with pytest.raises(MemberError, match="not a member"):
        member_remove(actor=team.alice, member=team.charlie)
    assert Member.objects.get(pk=team.charlie.pk).is_current


def test_removing_twice_is_refused_with_a_clear_message(client: Client, team: Team) -> None:
    member_remove(actor=team.alice, member=team.bob)
    with pytest.raises(MemberError, match="no longer a member"):
        member_remove(actor=team.alice, member=team.bob)
    login(client, team.alice)
    assert client.post(_url(team.bob)).status_code == 404  # the row is gone from the tab
    assert AuditEvent.objects.filter(action="member.remove").count() == 1


def test_the_page_gives_strangers_404_and_anonymous_a_login(client: Client, team: Team) -> None:
    assert client.get(_url(team.bob))["Location"].startswith("/accounts/login/")
    assert login(client, team.charlie).get(_url(team.bob)).status_code == 404
    assert client.post(_url(team.bob)).status_code == 404


def test_it_needs_csrf(csrf_client: Client, team: Team) -> None:
    login(csrf_client, team.alice)
    assert csrf_client.post(_url(team.bob)).status_code == 403
    assert Member.objects.get(pk=team.bob.pk).is_current


def test_it_rejects_other_methods(client: Client, team: Team) -> None:
    assert login(client, team.alice).put(_url(team.bob)).status_code == 405


def test_admins_get_403_on_an_owners_remove_page(client: Client, team: Team) -> None:
    login(client, team.amy)
    assert client.get(_url(team.alice)).status_code == 403
    assert client.post(_url(team.alice)).status_code == 403
    assert Member.objects.get(pk=team.alice.pk).is_current


def test_the_overview_counts_current_members_only(client: Client, team: Team) -> None:
    login(client, team.alice)
    assert "<dt>Members</dt><dd>3</dd>" in client.get("/workspaces/acme-tools/").content.decode()
    member_remove(actor=team.alice, member=team.bob)
    assert "<dt>Members</dt><dd>2</dd>" in client.get("/workspaces/acme-tools/").content.decode()
