"""member_set_role and the role control of the Members tab."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.conftest import Team, login
from tests.factories import MemberFactory, UserFactory
from workspaces.models import AuditEvent, Member
from workspaces.permissions import NotAllowed
from workspaces.services import MemberError, member_set_role

pytestmark = pytest.mark.django_db


def _url(member: Member) -> str:
    return f"/workspaces/acme-tools/members/{member.pk}/role/"


def _role(member: Member) -> str:
    return Member.objects.get(pk=member.pk).role


def test_an_admin_promotes_a_member_and_it_is_audited(client: Client, team: Team) -> None:
    login(client, team.amy)
    response = client.post(_url(team.bob), {"role": "admin"}, follow=True)
    assert response.status_code == 200 and "bob@example.com is now admin." in response.content.decode()
    assert _role(team.bob) == "admin"
    event = AuditEvent.objects.get(action="member.role_change")
    assert event.actor == team.amy.user and event.subject == team.bob.user
    assert event.details == {"email": "bob@example.com", "from": "member", "to": "admin"}


def test_setting_the_same_role_records_nothing(team: Team) -> None:
    member_set_role(actor=team.alice, member=team.bob, role="member")
    assert not AuditEvent.objects.filter(action="member.role_change").exists()


def test_admins_may_not_touch_owners_or_make_owners(team: Team) -> None:
    with pytest.raises(NotAllowed):
        member_set_role(actor=team.amy, member=team.alice, role="admin")
    with pytest.raises(NotAllowed):
        member_set_role(actor=team.amy, member=team.bob, role="owner")
    assert _role(team.alice) == "owner" and _role(team.bob) == "member"


def test_owners_may_make_owners_and_demote_them(team: Team) -> None:
    member_set_role(actor=team.alice, member=team.amy, role="owner")
    member_set_role(actor=team.amy, member=team.alice, role="member")
    assert _role(team.alice) == "member" and _role(team.amy) == "owner"


def test_the_last_owner_may_not_be_demoted(client: Client, team: Team) -> None:
    with pytest.raises(MemberError, match="last owner"):
        member_set_role(actor=team.alice, member=team.alice, role="admin")
    login(client, team.alice)
    # The tab offers no role control on one's own row; a forged post is refused all the same.
    response = client.post(_url(team.alice), {"role": "member"}, follow=True)
    assert "is the last owner and cannot be demoted" in response.content.decode()
    assert _role(team.alice) == "owner"


def test_an_admin_may_step_down(team: Team) -> None:
    member_set_role(actor=team.amy, member=team.amy, role="member")
    assert _role(team.amy) == "member"


def test_members_get_403(client: Client, team: Team) -> None:
    with pytest.raises(NotAllowed):
        member_set_role(actor=team.bob, member=team.amy, role="member")
    login(client, team.bob)
    assert client.post(_url(team.amy), {"role": "member"}).status_code == 403
    assert _role(team.amy) == "admin"


def test_bad_input_is_refused(client: Client, team: Team) -> None:
    with pytest.raises(MemberError) as info:
        member_set_role(actor=team.alice, member=team.bob, role="superuser")
    assert info.value.field == "role"
    login(client, team.alice)
    response = client.post(_url(team.bob), {"role": "<b>root</b>"}, follow=True)
    body = response.content.decode()
    assert "Choose Owner, Admin or Member." in body and "<b>root</b>" not in body
    assert _role(team.bob) == "member"
    assert client.get(_url(team.bob)).status_code == 405


def test_strangers_get_404_and_other_workspaces_members_too(client: Client, team: Team) -> None:
    login(client, team.charlie)
    assert client.post(_url(team.bob), {"role": "admin"}).status_code == 404
    other = MemberFactory(workspace=team.other, user=UserFactory())
    login(client, team.alice)
    assert (
        client.post(f"/workspaces/acme-tools/members/{other.pk}/role/", {"role": "admin"}).status_code == 404
    )
    assert _role(other) == "member"


def test_it_needs_csrf(csrf_client: Client, team: Team) -> None:
    login(csrf_client, team.alice)
    assert csrf_client.post(_url(team.bob), {"role": "admin"}).status_code == 403
