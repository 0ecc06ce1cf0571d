"""The Members tab: every current member with role, joined, last active, tokens and tool calls; pending
invites and the invite form for owners and admins; read-only for members."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.core import mail
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.analytics.helpers import record_usage
from tests.conftest import Team, login
from tests.factories import MemberFactory, UserFactory, WorkspaceFactory, make_token
from tokens.models import Token
from tokens.services import token_revoke
from workspaces.models import Invite, Member
from workspaces.services import member_invite

pytestmark = pytest.mark.django_db
URL = "/workspaces/acme-tools/members/"
INVITE = URL + "invite/"


def _row(body: str, member: Member) -> str:
    start = body.index(f'id="member-{member.pk}"')
    return body[start : body.index("</tr>", start)]


def _usage(member: Member, method: str, minutes_ago: int, outcome: str = "ok") -> None:
    record_usage(
        member,
        method=method,
        exposed_name="py__add" if method == "tools/call" else "",
        outcome=outcome,
        created_at=timezone.now() - timedelta(minutes=minutes_ago),
    )


def test_it_lists_every_member_with_their_figures(client: Client, team: Team) -> None:
    make_token(team.bob, name="one")
    make_token(team.bob, name="two")
    gone = make_token(team.bob, name="gone").token
    token_revoke(token=gone, actor=team.alice.user)
    expired = make_token(team.amy, name="old", expires_in=60).token
    Token.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    for minutes in (30, 20, 10):
        _usage(team.bob, "tools/call", minutes)
    _usage(team.bob, "tools/call", 8, outcome="rate_limited")  # refused: not a call (as on the Analytics tab)
    _usage(team.bob, "tools/list", 5)
    body = login(client, team.alice).get(URL).content.decode()
    tabs = re.search(r'<nav class="tabs".*?</nav>', body, re.S)
    assert tabs and 'href="/workspaces/acme-tools/members/" aria-current="page">Members<' in tabs.group(0)
    bob = _row(body, team.bob)
    assert "bob@example.com" in bob and "Member" in bob
    assert "2 active" in bob and ">3<" in bob  # tool calls count tools/call that were not refused
    last = (timezone.now() - timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M")
    assert last in bob
    amy = _row(body, team.amy)
    assert ">none<" in amy and ">0<" in amy and "Never" in amy
    assert team.amy.created_at.strftime("%Y-%m-%d") in amy
    assert f'id="member-{team.charlie.pk}"' not in body  # another workspace's member
    assert "(you)" in _row(body, team.alice)


def test_last_active_also_counts_token_use(client: Client, team: Team) -> None:
    token = make_token(team.amy).token
    used = timezone.now() - timedelta(minutes=2)
    Token.objects.filter(pk=token.pk).update(last_used_at=used)
    _usage(team.amy, "tools/call", 60)
    body = login(client, team.alice).get(URL).content.decode()
    assert used.strftime("%Y-%m-%d %H:%M") in _row(body, team.amy)


def test_managers_get_controls_and_members_a_read_only_tab(client: Client, team: Team) -> None:
    member_invite(actor=team.alice, email="dora@example.com", role="member", base_url="http://testserver")
    owner = login(client, team.alice).get(URL).content.decode()
    assert 'action="/workspaces/acme-tools/members/invite/"' in owner and "dora@example.com" in owner
    assert f"/members/{team.bob.pk}/remove/" in owner and f"/members/{team.amy.pk}/remove/" in owner
    assert f"/members/{team.alice.pk}/remove/" not in owner  # not oneself: that is Leave
    admin = login(Client(), team.amy).get(URL).content.decode()
    assert f"/members/{team.alice.pk}/remove/" not in admin and f"/members/{team.alice.pk}/role/" not in admin
    assert f"/members/{team.bob.pk}/role/" in admin and 'value="owner"' not in admin
    response = login(Client(), team.bob).get(URL)
    member = response.content.decode()
    assert response.status_code == 200 and "alice@example.com" in member and "amy@example.com" in member
    for control in ("/remove/", "/role/", "/invite/", "dora@example.com", "Pending invites"):
        assert control not in member
    assert "/members/leave/" in member


def test_it_gives_strangers_404_anonymous_a_login_and_refuses_posts(client: Client, team: Team) -> None:
    assert client.get(URL)["Location"].startswith("/accounts/login/")
    assert login(client, team.charlie).get(URL).status_code == 404
    assert login(Client(), team.alice).post(URL).status_code == 405


def test_it_invites_from_the_form(client: Client, team: Team) -> None:
    response = login(client, team.amy).post(
        INVITE, {"email": "dora@example.com", "role": "admin"}, follow=True
    )
    body = response.content.decode()
    assert response.redirect_chain[-1][0] == URL and "Invite sent to dora@example.com." in body
    invite = Invite.objects.get()
    row = body[body.index(f'id="invite-{invite.pk}"') :]
    assert "dora@example.com" in row and "Admin" in row and "amy@example.com" in row
    assert len(mail.outbox) == 1


@pytest.mark.parametrize(
    ("email", "message"),
    [
        ("bob@example.com", "bob@example.com is already a member of this workspace."),
        ("dora@example.com", "dora@example.com already has a pending invite."),
        ("not-an-address", "Enter a valid email address"),
        ("", "Enter the email address to invite."),
    ],
)
def test_it_shows_invite_errors_beside_the_field(
    client: Client, team: Team, email: str, message: str
) -> None:
    member_invite(actor=team.alice, email="dora@example.com", role="member", base_url="http://testserver")
    response = login(client, team.alice).post(INVITE, {"email": email, "role": "member"})
    assert response.status_code == 400
    error = re.search(r'<div class="error" id="id_email_error"><p>([^<]*)</p>', response.content.decode())
    assert error and message in error.group(1)
    assert Invite.objects.count() == 1


def test_it_shows_the_throttle_beside_the_field(client: Client, team: Team, settings) -> None:  # type: ignore[no-untyped-def]
    settings.INVITES_PER_DAY = 1
    login(client, team.alice).post(INVITE, {"email": "dora@example.com", "role": "member"})
    response = client.post(INVITE, {"email": "erin@example.com", "role": "member"})
    error = re.search(r'<div class="error" id="id_email_error"><p>([^<]*)</p>', response.content.decode())
    assert response.status_code == 400 and error and "1 invites in the last 24 hours" in error.group(1)


def test_it_refuses_a_bad_role_beside_the_field(client: Client, team: Team) -> None:
    response = login(client, team.alice).post(INVITE, {"email": "dora@example.com", "role": "owner"})
    assert response.status_code == 400 and 'id="id_role_error"' in response.content.decode()


def test_members_may_not_invite_resend_or_revoke(client: Client, team: Team) -> None:
    invite = member_invite(
        actor=team.alice, email="dora@example.com", role="member", base_url="http://testserver"
    ).invite
    login(client, team.bob)
    assert client.post(INVITE, {"email": "erin@example.com", "role": "member"}).status_code == 403
    assert client.post(f"{URL}invites/{invite.pk}/resend/").status_code == 403
    assert client.post(f"{URL}invites/{invite.pk}/revoke/").status_code == 403
    login(client, team.charlie)
    assert client.post(f"{URL}invites/{invite.pk}/revoke/").status_code == 404
    assert Invite.objects.get().revoked_at is None and len(mail.outbox) == 1


def test_it_resends_and_revokes_from_the_list(client: Client, team: Team) -> None:
    invite = member_invite(
        actor=team.alice, email="dora@example.com", role="member", base_url="http://testserver"
    ).invite
    login(client, team.amy)
    response = client.post(f"{URL}invites/{invite.pk}/resend/", follow=True)
    assert "Invite sent again to dora@example.com." in response.content.decode() and len(mail.outbox) == 2
    assert client.get(f"{URL}invites/{invite.pk}/resend/").status_code == 405
    response = client.post(f"{URL}invites/{invite.pk}/revoke/", follow=True)
    assert "was revoked" in response.content.decode()
    assert f'id="invite-{invite.pk}"' not in response.content.decode()
    assert client.post(f"{URL}invites/{invite.pk}/revoke/").status_code == 404


def test_invite_posts_need_csrf(csrf_client: Client, team: Team) -> None:
    login(csrf_client, team.alice)
    assert csrf_client.post(INVITE, {"email": "dora@example.com", "role": "member"}).status_code == 403
    assert not Invite.objects.exists()


def test_it_escapes_names_emails_and_roles(client: Client, team: Team) -> None:
    hostile = WorkspaceFactory(name="<script>alert('ws')</script>", slug="hostile")
    owner = MemberFactory(
        workspace=hostile, user=UserFactory(username="<b>owner</b>@example.com"), role="owner"
    )
    img = MemberFactory(
        workspace=hostile, user=UserFactory(username="<img src=x onerror=alert(1)>@example.com")
    )
    make_token(img, name="<svg onload=alert(2)>")
    # A role value that is not one of the choices (a tampered row) is shown as text too.
    odd = MemberFactory(workspace=hostile, user=UserFactory(username="odd@example.com"))
    Member.objects.filter(pk=odd.pk).update(role="<i>x</i>")  # fits max_length=10
    member_invite(actor=owner, email="dora@example.com", role="member", base_url="http://testserver")
    body = login(client, owner).get("/workspaces/hostile/members/").content.decode()
    for raw in ("<script>alert", "<b>owner</b>", "<img src=x", "<i>x</i>"):
        assert raw not in body
    assert (
        "&lt;script&gt;alert(&#x27;ws&#x27;)&lt;/script&gt;" in body
        and "&lt;b&gt;owner&lt;/b&gt;@example.com" in body
    )
    assert "&lt;img src=x onerror=alert(1)&gt;@example.com" in body and "&lt;i&gt;x&lt;/i&gt;" in body
    # The confirmation page, the Tokens tab (holder column and filter) and the Overview too.
    for path in (
        f"/workspaces/hostile/members/{img.pk}/remove/",
        "/workspaces/hostile/tokens/",
        "/workspaces/hostile/",
    ):
        page = client.get(path).content.decode()
        assert "<img src=x" not in page and "<svg" not in page and "<script>alert" not in page, path
    assert (
        "&lt;img src=x onerror=alert(1)&gt;@example.com"
        in client.get("/workspaces/hostile/tokens/").content.decode()
    )
    # The invite email of a workspace with markup in its name: escaped in HTML, verbatim in plain text.
    message = mail.outbox[-1]
    html = str(message.alternatives[0][0])  # type: ignore[attr-defined]
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;owner&lt;/b&gt;" in html
    assert "<script>alert('ws')</script>" in str(message.body) and "\n" not in message.subject


def test_it_needs_a_constant_number_of_queries(client: Client, team: Team) -> None:
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(URL).status_code == 200
        return len(captured)

    login(client, team.alice)
    few = queries()
    for n in range(30):
        member = MemberFactory(workspace=team.workspace, user=UserFactory())
        make_token(member, name=f"t{n}")
        _usage(member, "tools/call", n)
        member_invite(
            actor=team.alice, email=f"new{n}@example.com", role="member", base_url="http://testserver"
        )
    assert queries() == few
