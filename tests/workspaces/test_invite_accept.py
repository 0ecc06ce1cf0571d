"""The invite link end to end, through the Django test client: open, sign up or log in, accept, get a token.

Every bad link (expired, reused, revoked, re-sent, tampered, for another account) gets its own clear page,
never a 500 and never a join.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from tests.conftest import Team, login
from tests.factories import PASSWORD, UserFactory
from tests.gateway.helpers import McpTestClient
from tests.workspaces.helpers import last_invite_link
from tokens import format as token_format
from tokens.models import Token
from workspaces.models import AuditEvent, Invite, Member
from workspaces.services import (
    InviteRefusal,
    InviteRefused,
    invite_accept,
    invite_resend,
    invite_revoke,
    invite_secret_hash,
    member_invite,
    member_remove,
)

pytestmark = pytest.mark.django_db
BASE = "http://testserver"
RAW = re.compile(r"mwt_[0-9A-Za-z]{36}")
ACCEPT = "/invites/accept/"


def _invite(team: Team, email: str = "dora@example.com", role: str = "member") -> str:
    member_invite(actor=team.alice, email=email, role=role, base_url=BASE)
    return last_invite_link()


def _open(client: Client, link: str) -> None:
    response = client.get(link)
    assert response.status_code == 302 and response["Location"] == ACCEPT


def _state(body: str) -> str:
    match = re.search(r'data-invite-state="([a-z_]+)"', body)
    assert match, body
    return match.group(1)


def test_it_lets_a_new_user_sign_up_and_join_with_a_personal_token(client: Client, team: Team) -> None:
    link = _invite(team, role="admin")
    _open(client, link)
    page = client.get(ACCEPT)
    body = page.content.decode()
    assert page.status_code == 200 and _state(body) == "ready"
    assert "alice@example.com invited <strong>dora@example.com</strong>" in body and "Acme Tools" in body
    signup = re.search(r'href="(/accounts/signup/\?[^"]+)"', body)
    assert signup
    signup_url = signup.group(1).replace("&amp;", "&")
    form = client.get(signup_url).content.decode()
    assert 'value="dora@example.com"' in form and 'name="next" value="/invites/accept/"' in form
    response = client.post(
        signup_url,
        {
            "email": "dora@example.com",
            "password1": "Zebra-Lantern-42",
            "password2": "Zebra-Lantern-42",
            "next": ACCEPT,
        },
    )
    assert response.status_code == 302 and response["Location"] == ACCEPT
    assert _state(client.get(ACCEPT).content.decode()) == "ready"

    joined = client.post(ACCEPT)
    body = joined.content.decode()
    assert joined.status_code == 200 and "Welcome to Acme Tools" in body
    assert "no-store" in joined["Cache-Control"]
    raws = set(RAW.findall(body))
    assert len(raws) == 1
    raw = raws.pop()
    member = Member.objects.current().get(workspace=team.workspace, user__username="dora@example.com")
    assert member.role == "admin"
    token = Token.objects.get(member=member)
    assert token.token_hash == token_format.hash_token(raw) and token.name == "Personal token"
    mcp_json = json.loads(
        re.search(r'<pre id="mcp-json" class="mono">(.*?)</pre>', body, re.S).group(1).replace("&quot;", '"')  # type: ignore[union-attr]
    )
    assert mcp_json["mcpServers"]["acme-tools"]["headers"]["Authorization"] == f"Bearer {raw}"
    for client_name in ["Claude Desktop", "Cursor", "VS Code", "Claude Code"]:
        assert client_name in body
    assert raw not in str(dict(client.session))
    invite = Invite.objects.get()
    assert invite.accepted_at is not None and invite.member == member
    event = AuditEvent.objects.get(action="member.join")
    assert event.actor == member.user and event.subject == member.user and event.details["role"] == "admin"
    # His token works through the gateway at once.
    assert McpTestClient(raw).initialize().status_code == 200
    # The workspace is his now.
    assert client.get("/workspaces/acme-tools/").status_code == 200


def test_it_lets_an_existing_user_log_in_and_join(client: Client, team: Team) -> None:
    UserFactory(username="dora@example.com")
    _open(client, _invite(team))
    body = client.get(ACCEPT).content.decode()
    login_url = re.search(r'href="(/accounts/login/\?next=[^"]+)"', body)
    assert login_url
    response = client.post(
        login_url.group(1).replace("&amp;", "&"),
        {"username": "dora@example.com", "password": PASSWORD, "next": ACCEPT},
    )
    assert response.status_code == 302 and response["Location"] == ACCEPT
    assert RAW.search(client.post(ACCEPT).content.decode())


def test_an_anonymous_post_is_sent_to_log_in(client: Client, team: Team) -> None:
    _open(client, _invite(team))
    response = client.post(ACCEPT)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert not Member.objects.filter(user__username="dora@example.com").exists()


def test_a_reused_link_gets_a_clear_page(client: Client, team: Team) -> None:
    UserFactory(username="dora@example.com")
    link = _invite(team)
    client.login(username="dora@example.com", password=PASSWORD)
    _open(client, link)
    assert RAW.search(client.post(ACCEPT).content.decode())
    # A reload re-posts: nothing new, no token shown again.
    again = client.post(ACCEPT)
    assert again.status_code == 404 and not RAW.search(again.content.decode())
    # Opening the link again: "you have joined", for someone else "already used".
    _open(client, link)
    page = client.post(ACCEPT)
    assert page.status_code == 410 and "You have joined Acme Tools" in page.content.decode()
    other = Client()
    _open(other, link)
    page = other.get(ACCEPT)
    assert page.status_code == 410 and "already used" in page.content.decode()
    assert Token.objects.filter(member__user__username="dora@example.com").count() == 1
    assert Member.objects.filter(user__username="dora@example.com").count() == 1


def test_an_expired_link_gets_a_clear_page(client: Client, team: Team) -> None:
    dora = UserFactory(username="dora@example.com")
    link = _invite(team)
    Invite.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert client.login(username="dora@example.com", password=PASSWORD)
    _open(client, link)
    for response in (client.get(ACCEPT), client.post(ACCEPT)):
        body = response.content.decode()
        assert response.status_code == 410 and _state(body) == "expired" and "has expired" in body
    assert not Member.objects.filter(user=dora).exists()


def test_a_revoked_link_gets_a_clear_page(client: Client, team: Team) -> None:
    dora = UserFactory(username="dora@example.com")
    link = _invite(team)
    invite_revoke(actor=team.amy, invite=Invite.objects.get())
    assert client.login(username="dora@example.com", password=PASSWORD)
    _open(client, link)
    for response in (client.get(ACCEPT), client.post(ACCEPT)):
        assert response.status_code == 410 and _state(response.content.decode()) == "revoked"
    assert not Member.objects.filter(user=dora).exists()


def test_a_resent_invite_kills_the_old_link(client: Client, team: Team) -> None:
    UserFactory(username="dora@example.com")
    old_link = _invite(team)
    invite_resend(actor=team.alice, invite=Invite.objects.get(), base_url=BASE)
    new_link = last_invite_link()
    assert new_link != old_link
    assert client.login(username="dora@example.com", password=PASSWORD)
    _open(client, old_link)
    response = client.post(ACCEPT)
    assert response.status_code == 404 and _state(response.content.decode()) == "unknown"
    _open(client, new_link)
    assert RAW.search(client.post(ACCEPT).content.decode())


@pytest.mark.parametrize(
    "mangle",
    [
        lambda link: link[:-2] + ("A/" if link[-2] != "A" else "B/"),
        lambda link: link[:-10] + "/",
        lambda link: link[:-1] + "x" * 500 + "/",
        lambda link: link.rsplit("/", 2)[0] + "/%00%ff<script>/",
    ],
)
def test_a_tampered_link_gets_a_clear_page(client: Client, team: Team, mangle) -> None:  # type: ignore[no-untyped-def]
    dora = UserFactory(username="dora@example.com")
    link = _invite(team)
    assert client.login(username="dora@example.com", password=PASSWORD)
    response = client.get(mangle(link), follow=True)
    assert response.status_code == 404 and _state(response.content.decode()) == "unknown"
    assert client.post(ACCEPT).status_code == 404
    assert not Member.objects.filter(user=dora).exists()


def test_the_accept_page_without_a_link_is_unknown(client: Client, team: Team) -> None:
    assert client.get(ACCEPT).status_code == 404
    assert login(client, team.bob).post(ACCEPT).status_code == 404


def test_another_logged_in_account_is_told_and_never_joins(client: Client, team: Team) -> None:
    link = _invite(team)
    login(client, team.charlie)
    _open(client, link)
    for response in (client.get(ACCEPT), client.post(ACCEPT)):
        body = response.content.decode()
        assert response.status_code == 403 and _state(body) == "wrong_account"
        assert "sent to <strong>dora@example.com</strong>" in body and "charlie@example.com" in body
    assert not Member.objects.filter(workspace=team.workspace, user=team.charlie.user).exists()
    assert Invite.objects.get().accepted_at is None
    # "Log out and continue": logged out, the invite still in hand.
    response = client.post("/invites/switch-account/")
    assert response.status_code == 302 and response["Location"] == ACCEPT
    body = client.get(ACCEPT).content.decode()
    assert _state(body) == "ready" and "Sign up as dora@example.com" in body


def test_an_existing_member_is_told_so(client: Client, team: Team) -> None:
    # member_invite refuses current members, so this arises only when someone joined after being invited
    # (e.g. through a second invite): build that state directly.
    member_invite(actor=team.alice, email="dora@example.com", role="member", base_url=BASE)
    dora = UserFactory(username="dora@example.com")
    Member.objects.create(workspace=team.workspace, user=dora)
    with pytest.raises(InviteRefused) as info:
        invite_accept(secret_hash=Invite.objects.get().secret_hash, user=dora)
    assert info.value.refusal == InviteRefusal.ALREADY_MEMBER


def test_a_removed_and_reinvited_user_gets_a_fresh_membership_and_new_tokens(team: Team) -> None:
    from tests.factories import make_token

    old_token = make_token(team.bob).token
    member_remove(actor=team.alice, member=team.bob)
    member_invite(actor=team.alice, email="bob@example.com", role="member", base_url=BASE)
    joined = invite_accept(secret_hash=Invite.objects.get().secret_hash, user=team.bob.user)
    assert joined.member.pk != team.bob.pk and joined.member.is_current
    assert joined.token.token.pk != old_token.pk
    old_token.refresh_from_db()
    assert old_token.revoked_at is not None and old_token.member_id == team.bob.pk
    assert Member.objects.filter(workspace=team.workspace, user=team.bob.user).count() == 2


def test_the_secret_is_nowhere_after_the_flow(client: Client, team: Team, caplog) -> None:  # type: ignore[no-untyped-def]
    import logging

    from tests.test_no_secret_leaks import dump_database

    caplog.set_level(logging.DEBUG)
    UserFactory(username="dora@example.com")
    link = _invite(team)
    secret = link.rstrip("/").rsplit("/", 1)[1]
    client.login(username="dora@example.com", password=PASSWORD)
    _open(client, link)
    raw = RAW.search(client.post(ACCEPT).content.decode())
    assert raw
    database = dump_database()
    assert secret not in database and invite_secret_hash(secret) in database  # the dump sees invite rows
    assert raw.group(0) not in database
    assert secret not in caplog.text and raw.group(0) not in caplog.text
    assert len(mail.outbox) == 1


def test_the_invite_page_escapes_names(client: Client, team: Team) -> None:
    from workspaces.models import Workspace

    Workspace.objects.filter(pk=team.workspace.pk).update(name="<script>alert(1)</script>")
    User = type(team.alice.user)
    User.objects.filter(pk=team.alice.user.pk).update(username="<b>alice</b>@example.com")
    team.alice.refresh_from_db()
    _open(client, _invite(team))
    body = client.get(ACCEPT).content.decode()
    assert "<script>alert(1)" not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "<b>alice</b>" not in body and "&lt;b&gt;alice&lt;/b&gt;@example.com invited" in body


def test_invitees_may_sign_up_when_public_sign_up_is_closed(client: Client, team: Team, settings) -> None:  # type: ignore[no-untyped-def]
    settings.SIGNUP_OPEN = False
    assert client.get("/accounts/signup/").status_code == 404  # no invite in hand: closed
    _open(client, _invite(team))
    body = client.get(ACCEPT).content.decode()
    assert "Sign up as dora@example.com" in body
    form = client.get("/accounts/signup/?next=/invites/accept/")
    assert form.status_code == 200 and 'value="dora@example.com"' in form.content.decode()
    other = client.post(
        "/accounts/signup/",
        {"email": "eve@example.com", "password1": "Zebra-Lantern-42", "password2": "Zebra-Lantern-42"},
    )
    assert other.status_code == 400 and "by invitation only" in other.content.decode()
    response = client.post(
        "/accounts/signup/",
        {
            "email": "dora@example.com",
            "password1": "Zebra-Lantern-42",
            "password2": "Zebra-Lantern-42",
            "next": ACCEPT,
        },
    )
    assert response.status_code == 302 and response["Location"] == ACCEPT
    assert RAW.search(client.post(ACCEPT).content.decode())
    # The invite is used up: sign-up is closed again for this browser.
    client.logout()
    assert client.get("/accounts/signup/").status_code == 404


def test_a_closed_sign_up_stays_closed_for_an_expired_invite(client: Client, team: Team, settings) -> None:  # type: ignore[no-untyped-def]
    settings.SIGNUP_OPEN = False
    _open(client, _invite(team))
    Invite.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert client.get("/accounts/signup/").status_code == 404


def test_accepting_needs_csrf(csrf_client: Client, team: Team) -> None:
    UserFactory(username="dora@example.com")
    link = _invite(team)
    assert csrf_client.login(username="dora@example.com", password=PASSWORD)
    _open(csrf_client, link)
    assert csrf_client.post(ACCEPT).status_code == 403
    assert csrf_client.post("/invites/switch-account/").status_code == 403
    assert not Member.objects.filter(user__username="dora@example.com").exists()


def test_the_link_answers_only_get(client: Client, team: Team) -> None:
    link = _invite(team)
    assert client.post(link).status_code == 405
    assert client.get("/invites/switch-account/").status_code == 405
