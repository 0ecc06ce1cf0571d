"""token_rotate: the successor, the grace period (the old token's new expiry), the chain, the audit row,
the refusals, and the shared token cache seeing the new expiry on the very next request."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.conftest import Team
from tests.factories import make_token
from tests.gateway.conftest import make_server
from tokens.models import Token
from tokens.services import (
    GRACE_CHOICES,
    Refusal,
    TokenError,
    token_authenticate,
    token_revoke,
    token_rotate,
)
from workspaces.activity import summary
from workspaces.models import AuditEvent
from workspaces.permissions import NotAllowed

pytestmark = pytest.mark.django_db


def auth(raw: str, now: object = None) -> Refusal | None:
    return token_authenticate(raw=raw, workspace_slug="acme-tools", now=now).refusal  # type: ignore[arg-type]


@pytest.mark.parametrize("grace", GRACE_CHOICES)
def test_it_rotates_with_each_grace_choice(team: Team, grace: int) -> None:
    old = make_token(team.bob, name="Bob Cursor")
    now = timezone.now()
    new = token_rotate(token=old.token, actor=team.bob.user, grace_seconds=grace, now=now)
    old.token.refresh_from_db()
    assert new.token.rotated_from == old.token and new.token.name == "Bob Cursor"
    assert new.token.member == team.bob and new.raw != old.raw
    assert auth(new.raw, now) is None
    if grace == 0:
        assert old.token.revoked_at == now and old.token.revoked_by == team.bob.user
        assert auth(old.raw, now) == Refusal.REVOKED
    else:
        assert old.token.revoked_at is None and old.token.expires_at == now + timedelta(seconds=grace)
        assert auth(old.raw, now + timedelta(seconds=grace - 1)) is None  # both work during the grace


def test_the_old_token_is_refused_exactly_when_its_grace_ends(team: Team) -> None:
    old = make_token(team.bob)
    now = timezone.now()
    token_rotate(token=old.token, actor=team.bob.user, grace_seconds=3600, now=now)
    end = now + timedelta(hours=1)
    assert auth(old.raw, end - timedelta(microseconds=1)) is None
    assert auth(old.raw, end) == Refusal.EXPIRED  # a token whose grace ends now is refused


def test_the_grace_never_outlives_the_old_expiry(team: Team) -> None:
    old = make_token(team.bob, expires_in=600)
    token_rotate(token=old.token, actor=team.bob.user, grace_seconds=86400)
    expires_at = old.token.expires_at
    old.token.refresh_from_db()
    assert old.token.expires_at == expires_at


def test_the_successor_keeps_the_lifetime_policy_and_the_scopes(team: Team) -> None:
    server = make_server(team.alice, slug="gh", url="https://mcp.example.com/mcp")
    old = make_token(team.bob, expires_in=86400, scopes={server.pk: ["add"]})
    later = old.token.created_at + timedelta(hours=5)
    new = token_rotate(token=old.token, actor=team.bob.user, grace_seconds=0, now=later)
    assert new.token.expires_at == later + timedelta(days=1)
    assert new.token.scopes == {str(server.pk): ["add"]}
    forever = token_rotate(token=make_token(team.bob).token, actor=team.bob.user, grace_seconds=0)
    assert forever.token.expires_at is None


def test_rotating_the_successor_during_the_grace_keeps_the_chain(team: Team) -> None:
    first = make_token(team.bob)
    now = timezone.now()
    second = token_rotate(token=first.token, actor=team.bob.user, grace_seconds=86400, now=now)
    third = token_rotate(token=second.token, actor=team.bob.user, grace_seconds=3600, now=now)
    assert third.token.rotated_from == second.token and second.token.rotated_from == first.token
    first.token.refresh_from_db()
    assert first.token.expires_at == now + timedelta(days=1)  # its grace is untouched
    for raw in (first.raw, second.raw, third.raw):
        assert auth(raw, now + timedelta(minutes=30)) is None
    assert auth(second.raw, now + timedelta(hours=2)) == Refusal.EXPIRED
    assert auth(first.raw, now + timedelta(hours=2)) is None


def test_it_refuses_a_token_that_was_already_rotated(team: Team) -> None:
    old = make_token(team.bob)
    token_rotate(token=old.token, actor=team.bob.user, grace_seconds=3600)
    with pytest.raises(TokenError, match="already rotated"):
        token_rotate(token=old.token, actor=team.bob.user, grace_seconds=0)


def test_it_refuses_revoked_and_expired_tokens(team: Team) -> None:
    revoked = make_token(team.bob)
    token_revoke(token=revoked.token, actor=team.bob.user)
    with pytest.raises(TokenError, match="revoked"):
        token_rotate(token=revoked.token, actor=team.bob.user, grace_seconds=0)
    expired = make_token(team.bob, expires_in=60)
    with pytest.raises(TokenError, match="expired"):
        token_rotate(
            token=expired.token,
            actor=team.bob.user,
            grace_seconds=0,
            now=timezone.now() + timedelta(minutes=2),
        )
    assert Token.objects.filter(rotated_from__isnull=False).count() == 0
    assert not AuditEvent.objects.filter(action="token.rotate").exists()


@pytest.mark.parametrize("grace", [-1, GRACE_CHOICES[-1] * 10, True])
def test_it_refuses_a_bad_grace(team: Team, grace: int) -> None:
    with pytest.raises(TokenError) as raised:
        token_rotate(token=make_token(team.bob).token, actor=team.bob.user, grace_seconds=grace)
    assert raised.value.field == "grace_seconds"


def test_it_writes_the_audit_row_in_the_same_step(team: Team) -> None:
    old = make_token(team.bob, name="Bob CI")
    new = token_rotate(token=old.token, actor=team.alice.user, grace_seconds=3600)
    event = AuditEvent.objects.get(action="token.rotate")
    assert event.actor == team.alice.user and event.subject == team.bob.user
    assert event.target == f"token:{old.token.pk}"
    assert event.details["successor"] == new.token.pk and event.details["grace_seconds"] == 3600
    assert old.raw not in str(event.details) and new.raw not in str(event.details)
    text = summary(event)
    assert text.startswith("rotated token “Bob CI”") and new.token.hint in text and "works until" in text


def test_members_rotate_only_their_own_tokens(team: Team) -> None:
    alices = make_token(team.alice)
    with pytest.raises(NotAllowed):
        token_rotate(token=alices.token, actor=team.bob.user, grace_seconds=0)
    with pytest.raises(NotAllowed):
        token_rotate(token=alices.token, actor=team.charlie.user, grace_seconds=0)
    assert token_rotate(token=make_token(team.bob).token, actor=team.amy.user, grace_seconds=0).token


class TestSharedTokenCache:
    """With the shared token cache on (Redis in the PostgreSQL + Redis run), the old token's new expiry is
    seen by the very next request, although its positive entry was cached with no expiry at all."""

    @pytest.fixture(autouse=True)
    def _enabled(self, settings) -> None:  # type: ignore[no-untyped-def]
        settings.TOKEN_CACHE_SECONDS = 60

    def test_a_grace_end_is_seen_on_the_next_request(self, team: Team) -> None:
        old = make_token(team.bob)
        assert auth(old.raw) is None  # now cached, with expires_at None
        now = timezone.now()
        token_rotate(token=old.token, actor=team.bob.user, grace_seconds=3600, now=now)
        assert auth(old.raw, now + timedelta(minutes=59)) is None
        assert auth(old.raw, now + timedelta(hours=1)) == Refusal.EXPIRED

    def test_revoke_now_is_seen_on_the_next_request(self, team: Team) -> None:
        old = make_token(team.bob)
        assert auth(old.raw) is None
        new = token_rotate(token=old.token, actor=team.bob.user, grace_seconds=0)
        assert auth(old.raw) == Refusal.REVOKED and auth(new.raw) is None
