"""Transfer ownership: the chosen member becomes owner, the previous owner an admin; never no owner."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from tests.conftest import Team, login
from tests.factories import MemberFactory, UserFactory
from tests.gateway.conftest import error_beside
from workspaces.models import AuditEvent, Member
from workspaces.permissions import NotAllowed
from workspaces.services import WorkspaceError, ownership_transfer

pytestmark = pytest.mark.django_db
URL = "/workspaces/acme-tools/settings/transfer/"


def _roles(team: Team) -> dict[str, str]:
    members = Member.objects.current().filter(workspace=team.workspace).select_related("user")
    return {m.user.username.split("@")[0]: m.role for m in members}


def test_it_offers_every_member_but_owners(client: Client, team: Team) -> None:
    body = login(client, team.alice).get(URL).content.decode()
    assert "bob@example.com (Member)" in body and "amy@example.com (Admin)" in body
    assert "alice@example.com (Owner)" not in body and "charlie" not in body


def test_it_transfers_and_makes_the_previous_owner_an_admin(client: Client, team: Team) -> None:
    response = login(client, team.alice).post(URL, {"to": team.bob.pk})
    assert response.status_code == 302 and response["Location"] == "/workspaces/acme-tools/"
    assert _roles(team) == {"alice": "admin", "amy": "admin", "bob": "owner"}
    assert (
        "bob@example.com now owns Acme Tools. You are an admin."
        in client.get("/workspaces/acme-tools/").content.decode()
    )
    event = AuditEvent.objects.get(action="ownership.transfer")
    assert (event.actor, event.subject, event.target) == (team.alice.user, team.bob.user, "bob@example.com")
    assert event.details == {
        "from": "alice@example.com",
        "to": "bob@example.com",
        "to_previous_role": "member",
        "from_new_role": "admin",
    }
    # alice is an admin now: settings and a second transfer are no longer hers.
    assert client.get("/workspaces/acme-tools/settings/").status_code == 403
    assert client.post(URL, {"to": team.amy.pk}).status_code == 403


def test_the_new_owner_holds_the_settings(client: Client, team: Team) -> None:
    ownership_transfer(actor=team.alice, to=team.amy)
    assert login(client, team.amy).get("/workspaces/acme-tools/settings/").status_code == 200


@pytest.mark.parametrize(
    ("choice", "error"),
    [("", "Choose the member who becomes the owner."), ("999999", "Choose a current member")],
)
def test_it_shows_bad_choices_beside_the_field(client: Client, team: Team, choice: str, error: str) -> None:
    response = login(client, team.alice).post(URL, {"to": choice})
    assert response.status_code == 400 and error in error_beside(response, "to")
    assert _roles(team)["alice"] == "owner"


def test_it_refuses_a_member_of_another_workspace(client: Client, team: Team) -> None:
    response = login(client, team.alice).post(URL, {"to": team.charlie.pk})
    assert response.status_code == 400 and _roles(team)["alice"] == "owner"
    with pytest.raises(WorkspaceError):
        ownership_transfer(actor=team.alice, to=team.charlie)


def test_it_refuses_an_ended_membership(team: Team) -> None:
    Member.objects.filter(pk=team.bob.pk).update(ended_at=timezone.now())
    with pytest.raises(WorkspaceError, match="current member"):
        ownership_transfer(actor=team.alice, to=team.bob)


def test_it_refuses_oneself_and_other_owners(team: Team) -> None:
    with pytest.raises(WorkspaceError, match="already own"):
        ownership_transfer(actor=team.alice, to=team.alice)
    co_owner = MemberFactory(
        workspace=team.workspace, user=UserFactory(username="olga@example.com"), role="owner"
    )
    with pytest.raises(WorkspaceError, match="already an owner"):
        ownership_transfer(actor=team.alice, to=co_owner)
    assert not AuditEvent.objects.filter(action="ownership.transfer").exists()


def test_it_keeps_an_owner_when_two_owners_transfer_in_turn(team: Team) -> None:
    co_owner = MemberFactory(
        workspace=team.workspace, user=UserFactory(username="olga@example.com"), role="owner"
    )
    ownership_transfer(actor=team.alice, to=team.bob)
    ownership_transfer(actor=co_owner, to=team.amy)
    assert _roles(team) == {"alice": "admin", "amy": "owner", "bob": "owner", "olga": "admin"}


def test_a_stale_owner_object_cannot_transfer_after_losing_ownership(team: Team) -> None:
    stale_alice = Member.objects.get(pk=team.alice.pk)
    ownership_transfer(actor=team.alice, to=team.bob)
    # The service re-reads the role under the workspace lock: the old object still says "owner".
    assert stale_alice.role == "owner"
    with pytest.raises(NotAllowed):
        ownership_transfer(actor=stale_alice, to=team.amy)
    assert _roles(team) == {"alice": "admin", "amy": "admin", "bob": "owner"}


@pytest.mark.parametrize("persona", ["amy", "bob"])
def test_it_forbids_admins_and_members(client: Client, team: Team, persona: str) -> None:
    login(client, getattr(team, persona))
    assert client.get(URL).status_code == 403
    assert client.post(URL, {"to": getattr(team, persona).pk}).status_code == 403
    assert _roles(team)["alice"] == "owner"


def test_it_gives_strangers_404(client: Client, team: Team) -> None:
    login(client, team.charlie)
    assert client.post(URL, {"to": team.charlie.pk}).status_code == 404


def test_it_redirects_anonymous_users(client: Client, team: Team) -> None:
    assert client.post(URL, {"to": team.bob.pk}).status_code == 302 and _roles(team)["alice"] == "owner"


def test_it_refuses_other_methods(client: Client, team: Team) -> None:
    assert login(client, team.alice).put(URL).status_code == 405


def test_it_enforces_csrf(csrf_client: Client, team: Team) -> None:
    assert login(csrf_client, team.alice).post(URL, {"to": team.bob.pk}).status_code == 403
    assert _roles(team)["alice"] == "owner"


def test_it_says_when_nobody_can_take_over(client: Client, team: Team) -> None:
    Member.objects.filter(pk__in=[team.amy.pk, team.bob.pk]).update(ended_at=timezone.now())
    body = login(client, team.alice).get(URL).content.decode()
    assert "There is nobody to hand the workspace to yet" in body


def test_it_escapes_names(client: Client, team: Team) -> None:
    MemberFactory(workspace=team.workspace, user=UserFactory(username="<b>mallory</b>@example.com"))
    body = login(client, team.alice).get(URL).content.decode()
    assert "<b>mallory</b>" not in body and "&lt;b&gt;mallory&lt;/b&gt;@example.com" in body


@pytest.mark.only_on("postgresql")  # SQLite has one writer at a time: there is no row lock to test
@pytest.mark.django_db(transaction=True)
def test_two_transfers_at_the_same_moment_make_one_new_owner(team: Team) -> None:
    """The sole owner submits two transfers at once: the row lock lets one through; the other then sees
    that its actor is an admin now and is refused (without the lock both would pass: two new owners)."""
    import threading

    from django.db import connection

    barrier = threading.Barrier(2)
    results: list[str] = []

    def transfer(to: Member) -> None:
        try:
            barrier.wait(timeout=10)
            ownership_transfer(actor=team.alice, to=to)
            results.append("transferred")
        except NotAllowed:
            results.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=transfer, args=(heir,)) for heir in (team.amy, team.bob)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results) == ["refused", "transferred"]
    roles = _roles(team)
    assert roles["alice"] == "admin" and sorted([roles["amy"], roles["bob"]]) in (
        ["admin", "owner"],
        ["member", "owner"],
    )
    assert AuditEvent.objects.filter(action="ownership.transfer").count() == 1
