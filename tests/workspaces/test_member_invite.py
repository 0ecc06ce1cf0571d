"""member_invite, invite_resend, invite_revoke: the services behind the Members tab's invite form."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from tests.conftest import Team
from tests.factories import UserFactory
from tests.workspaces.helpers import last_invite_secret
from workspaces.models import AuditEvent, Invite, Member
from workspaces.permissions import NotAllowed
from workspaces.services import (
    MemberError,
    invite_resend,
    invite_revoke,
    invite_secret_hash,
    member_invite,
    member_remove,
)

pytestmark = pytest.mark.django_db
BASE = "http://testserver"


def test_it_invites_and_stores_only_the_hash_of_the_secret(team: Team) -> None:
    sent = member_invite(actor=team.alice, email=" Dora@Example.com ", role="admin", base_url=BASE)
    invite = Invite.objects.get()
    assert sent.delivered and sent.invite == invite
    assert (
        invite.email == "dora@example.com" and invite.role == "admin" and invite.invited_by == team.alice.user
    )
    secret = last_invite_secret()
    assert invite.secret_hash == invite_secret_hash(secret) and secret not in str(
        Invite.objects.filter(pk=invite.pk).values().get()
    )
    assert invite.expires_at - invite.sent_at == timedelta(days=7)
    assert mail.outbox[-1].to == ["dora@example.com"]


def test_it_writes_the_audit_row(team: Team) -> None:
    dora = UserFactory(username="dora@example.com")
    invite = member_invite(actor=team.amy, email="dora@example.com", role="member", base_url=BASE).invite
    event = AuditEvent.objects.get(action="member.invite")
    assert event.workspace == team.workspace and event.actor == team.amy.user and event.subject == dora
    assert event.target == f"invite:{invite.pk}" and event.details == {
        "email": "dora@example.com",
        "role": "member",
    }
    assert last_invite_secret() not in str(event.details)


def test_it_takes_the_expiry_from_the_setting(team: Team, settings) -> None:  # type: ignore[no-untyped-def]
    settings.INVITE_EXPIRY_DAYS = 2
    invite = member_invite(actor=team.alice, email="dora@example.com", role="member", base_url=BASE).invite
    assert invite.expires_at - invite.sent_at == timedelta(days=2)


@pytest.mark.parametrize(
    ("email", "message"),
    [
        ("bob@example.com", "already a member"),
        ("BOB@example.com", "already a member"),
        ("not-an-address", "valid email address"),
        ("", "valid email address"),
        ("a@b@example.com", "valid email address"),
    ],
)
def test_it_refuses_bad_addresses(team: Team, email: str, message: str) -> None:
    with pytest.raises(MemberError) as info:
        member_invite(actor=team.alice, email=email, role="member", base_url=BASE)
    assert info.value.field == "email" and message in info.value.message
    assert not Invite.objects.exists() and not mail.outbox


def test_it_refuses_a_pending_address(team: Team) -> None:
    member_invite(actor=team.alice, email="dora@example.com", role="member", base_url=BASE)
    with pytest.raises(MemberError) as info:
        member_invite(actor=team.amy, email="Dora@example.com", role="admin", base_url=BASE)
    assert info.value.field == "email" and "pending invite" in info.value.message
    assert Invite.objects.count() == 1 and len(mail.outbox) == 1


def test_it_renews_an_expired_invite_instead_of_refusing(team: Team) -> None:
    first = member_invite(actor=team.alice, email="dora@example.com", role="member", base_url=BASE).invite
    old_hash = first.secret_hash
    later = timezone.now() + timedelta(days=8)
    again = member_invite(
        actor=team.amy, email="dora@example.com", role="admin", base_url=BASE, now=later
    ).invite
    assert again.pk == first.pk and Invite.objects.count() == 1
    assert again.secret_hash != old_hash and again.role == "admin" and again.expires_at > later


def test_it_lets_a_removed_member_be_invited_again(team: Team) -> None:
    member_remove(actor=team.alice, member=team.bob)
    assert member_invite(actor=team.alice, email="bob@example.com", role="member", base_url=BASE).delivered


def test_it_refuses_a_bad_role(team: Team) -> None:
    with pytest.raises(MemberError) as info:
        member_invite(actor=team.alice, email="dora@example.com", role="owner", base_url=BASE)
    assert info.value.field == "role"


def test_it_refuses_members_and_former_members(team: Team) -> None:
    with pytest.raises(NotAllowed):
        member_invite(actor=team.bob, email="dora@example.com", role="member", base_url=BASE)
    Member.objects.filter(pk=team.amy.pk).update(ended_at=timezone.now())
    with pytest.raises(NotAllowed):
        member_invite(actor=team.amy, email="dora@example.com", role="member", base_url=BASE)
    assert not Invite.objects.exists()


def test_it_throttles_invites_per_workspace(team: Team, settings) -> None:  # type: ignore[no-untyped-def]
    settings.INVITES_PER_DAY = 3
    for n in range(2):
        member_invite(actor=team.alice, email=f"u{n}@example.com", role="member", base_url=BASE)
    invite_resend(actor=team.alice, invite=Invite.objects.first(), base_url=BASE)  # type: ignore[arg-type]
    with pytest.raises(MemberError) as info:
        member_invite(actor=team.alice, email="u9@example.com", role="member", base_url=BASE)
    assert info.value.field == "email" and "3 invites in the last 24 hours" in info.value.message
    # Another workspace has its own allowance; a day later this one has its allowance back.
    member_invite(actor=team.charlie, email="u9@example.com", role="member", base_url=BASE)
    later = timezone.now() + timedelta(days=1, seconds=1)
    member_invite(actor=team.alice, email="u9@example.com", role="member", base_url=BASE, now=later)


def test_it_keeps_the_invite_when_the_mail_server_fails(team: Team, settings, caplog) -> None:  # type: ignore[no-untyped-def]
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 9, 2
    sent = member_invite(actor=team.alice, email="dora@example.com", role="member", base_url=BASE)
    assert not sent.delivered and Invite.objects.get() == sent.invite
    assert "could not be sent" in caplog.text


def test_it_resends_with_a_new_secret(team: Team) -> None:
    invite = member_invite(actor=team.alice, email="dora@example.com", role="member", base_url=BASE).invite
    first_secret = last_invite_secret()
    later = timezone.now() + timedelta(days=3)
    resent = invite_resend(actor=team.amy, invite=invite, base_url=BASE, now=later).invite
    second_secret = last_invite_secret()
    assert second_secret != first_secret and resent.secret_hash == invite_secret_hash(second_secret)
    assert resent.sent_at == later and resent.expires_at == later + timedelta(days=7)
    assert resent.invited_by == team.alice.user  # who invited stays; the audit row says who re-sent
    event = AuditEvent.objects.get(action="invite.resend")
    assert event.actor == team.amy.user and event.details["email"] == "dora@example.com"
    assert len(mail.outbox) == 2


def test_it_revokes(team: Team) -> None:
    invite = member_invite(actor=team.alice, email="dora@example.com", role="member", base_url=BASE).invite
    revoked = invite_revoke(actor=team.amy, invite=invite)
    assert revoked.revoked_at is not None and revoked.revoked_by == team.amy.user
    event = AuditEvent.objects.get(action="invite.revoke")
    assert event.actor == team.amy.user and event.target == f"invite:{invite.pk}"
    with pytest.raises(MemberError):
        invite_revoke(actor=team.alice, invite=invite)
    with pytest.raises(MemberError):
        invite_resend(actor=team.alice, invite=invite, base_url=BASE)
    assert AuditEvent.objects.filter(action="invite.revoke").count() == 1
    # The address is free again.
    member_invite(actor=team.alice, email="dora@example.com", role="member", base_url=BASE)


def test_members_may_not_resend_or_revoke(team: Team) -> None:
    invite = member_invite(actor=team.alice, email="dora@example.com", role="member", base_url=BASE).invite
    with pytest.raises(NotAllowed):
        invite_revoke(actor=team.bob, invite=invite)
    with pytest.raises(NotAllowed):
        invite_resend(actor=team.bob, invite=invite, base_url=BASE)


def test_it_refuses_an_invite_of_another_workspace(team: Team) -> None:
    invite = member_invite(actor=team.charlie, email="dora@example.com", role="member", base_url=BASE).invite
    with pytest.raises(MemberError):
        invite_revoke(actor=team.alice, invite=invite)
    assert Invite.objects.get().revoked_at is None
