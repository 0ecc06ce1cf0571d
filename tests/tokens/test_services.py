from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.conftest import Team
from tests.factories import make_token
from tokens import format as token_format
from tokens.models import Token
from tokens.services import (
    Refusal,
    TokenError,
    token_authenticate,
    token_cache_key,
    token_create,
    token_revoke,
    token_status,
    token_touch,
)
from workspaces.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_it_creates_a_token_storing_only_its_hash(team: Team) -> None:
    created = make_token(team.alice, name="Alice Cursor")
    token = Token.objects.get(pk=created.token.pk)
    assert token.token_hash == token_format.hash_token(created.raw)
    assert token.hint == token_format.hint_for(created.raw)
    assert token.member == team.alice and token.created_by == team.alice.user
    assert token.expires_at is None and token.revoked_at is None and token.last_used_at is None
    assert created.raw not in str(Token.objects.filter(pk=token.pk).values().get())


def test_it_writes_an_audit_row_with_the_create(team: Team) -> None:
    created = make_token(team.alice, name="CI Bot", expires_in=3600)
    event = AuditEvent.objects.get(action="token.create")
    assert event.workspace == team.workspace and event.actor == team.alice.user
    assert event.target == f"token:{created.token.pk}"
    assert event.details["name"] == "CI Bot" and event.details["expires_in"] == 3600
    assert created.raw not in str(event.details)


def test_it_sets_expiry_from_seconds(team: Team) -> None:
    now = timezone.now()
    created = token_create(
        workspace=team.workspace,
        holder=team.alice,
        name="x",
        expires_in=86400,
        created_by=team.alice.user,
        now=now,
    )
    assert created.token.expires_at == now + timedelta(seconds=86400)


@pytest.mark.parametrize(
    ("name", "expires_in", "field"),
    [
        ("", None, "name"),
        ("   ", None, "name"),
        ("x" * 101, None, "name"),
        ("ok", 0, "expires_in"),
        ("ok", -5, "expires_in"),
        ("ok", True, "expires_in"),
        ("ok", 10**12, "expires_in"),
    ],
)
def test_it_refuses_bad_input(team: Team, name: str, expires_in: int, field: str) -> None:
    with pytest.raises(TokenError) as info:
        token_create(
            workspace=team.workspace,
            holder=team.alice,
            name=name,
            expires_in=expires_in,
            created_by=team.alice.user,
        )
    assert info.value.field == field
    assert not Token.objects.exists() and not AuditEvent.objects.filter(action="token.create").exists()


def test_it_refuses_a_holder_from_another_workspace(team: Team) -> None:
    with pytest.raises(TokenError):
        token_create(
            workspace=team.workspace,
            holder=team.charlie,
            name="x",
            expires_in=None,
            created_by=team.alice.user,
        )


def test_it_authenticates_an_active_token(team: Team) -> None:
    created = make_token(team.bob)
    result = token_authenticate(raw=created.raw, workspace_slug="acme-tools")
    assert result.ok and result.token == created.token and result.refusal is None
    assert result.token is not None and result.token.member == team.bob


def test_it_refuses_a_malformed_token_without_touching_the_database(team: Team) -> None:
    raw = make_token(team.bob).raw
    tampered = raw[:-1] + ("A" if raw[-1] != "A" else "B")
    with CaptureQueriesContext(connection) as queries:
        result = token_authenticate(raw=tampered, workspace_slug="acme-tools")
        assert (
            token_authenticate(raw="Bearer nonsense", workspace_slug="acme-tools").refusal
            == Refusal.MALFORMED
        )
    assert result.refusal == Refusal.MALFORMED and result.token is None
    assert len(queries) == 0


def test_it_refuses_an_unknown_token(team: Team) -> None:
    assert (
        token_authenticate(raw=token_format.generate(), workspace_slug="acme-tools").refusal
        == Refusal.UNKNOWN
    )


def test_it_refuses_a_token_of_another_workspace(team: Team) -> None:
    raw = make_token(team.charlie).raw
    assert token_authenticate(raw=raw, workspace_slug="acme-tools").refusal == Refusal.WRONG_WORKSPACE
    assert token_authenticate(raw=raw, workspace_slug="no-such-workspace").refusal == Refusal.WRONG_WORKSPACE
    assert token_authenticate(raw=raw, workspace_slug="charlies").ok


def test_it_refuses_a_revoked_token(team: Team) -> None:
    created = make_token(team.bob)
    token_revoke(token=created.token, actor=team.alice.user)
    assert token_authenticate(raw=created.raw, workspace_slug="acme-tools").refusal == Refusal.REVOKED


def test_it_treats_the_expiry_instant_itself_as_expired(team: Team) -> None:
    now = timezone.now()
    created = token_create(
        workspace=team.workspace,
        holder=team.bob,
        name="x",
        expires_in=60,
        created_by=team.alice.user,
        now=now,
    )
    expires_at = now + timedelta(seconds=60)
    just_before = expires_at - timedelta(microseconds=1)
    assert token_authenticate(raw=created.raw, workspace_slug="acme-tools", now=just_before).ok
    assert (
        token_authenticate(raw=created.raw, workspace_slug="acme-tools", now=expires_at).refusal
        == Refusal.EXPIRED
    )
    assert token_status(created.token, expires_at) == Token.Status.EXPIRED
    assert token_status(created.token, just_before) == Token.Status.ACTIVE


def test_it_reports_revoked_over_expired(team: Team) -> None:
    created = make_token(team.bob, expires_in=1)
    token_revoke(token=created.token, actor=team.alice.user)
    later = timezone.now() + timedelta(hours=1)
    assert token_status(created.token, later) == Token.Status.REVOKED


def test_it_revokes_once_and_records_it(team: Team) -> None:
    created = make_token(team.bob)
    first = token_revoke(token=created.token, actor=team.alice.user)
    revoked_at = first.revoked_at
    assert revoked_at is not None and first.revoked_by == team.alice.user
    second = token_revoke(token=Token.objects.get(pk=created.token.pk), actor=team.amy.user)
    assert second.revoked_at == revoked_at and second.revoked_by == team.alice.user
    events = AuditEvent.objects.filter(action="token.revoke")
    assert events.count() == 1 and events.get().actor == team.alice.user
    assert Token.objects.filter(pk=created.token.pk).exists()  # soft: kept for audit


def test_it_writes_last_used_at_most_once_a_minute(team: Team) -> None:
    token = make_token(team.bob).token
    now = timezone.now()
    assert token_touch(token, now) is True
    assert token_touch(token, now + timedelta(seconds=59)) is False
    stale_copy = Token.objects.get(pk=token.pk)
    stale_copy.last_used_at = None  # another worker that has not seen the write
    assert token_touch(stale_copy, now + timedelta(seconds=30)) is False
    assert Token.objects.get(pk=token.pk).last_used_at == now
    assert token_touch(token, now + timedelta(seconds=61)) is True
    assert Token.objects.get(pk=token.pk).last_used_at == now + timedelta(seconds=61)


def test_it_loads_the_token_exactly_as_the_orm_does(team: Team) -> None:
    created = make_token(team.bob, expires_in=3600)
    token_touch(created.token)
    result = token_authenticate(raw=created.raw, workspace_slug="acme-tools")
    assert result.token is not None
    orm = Token.objects.select_related("workspace").get(pk=created.token.pk)
    fields = [f.attname for f in Token._meta.concrete_fields]
    assert {f: getattr(result.token, f) for f in fields} == {f: getattr(orm, f) for f in fields}
    assert result.token.expires_at is not None and result.token.expires_at.tzinfo is not None
    workspace_fields = [f.attname for f in result.token.workspace._meta.concrete_fields]
    assert {f: getattr(result.token.workspace, f) for f in workspace_fields} == {
        f: getattr(orm.workspace, f) for f in workspace_fields
    }
    assert result.token._state.adding is False and result.token._state.db == "default"


class TestSharedTokenCache:
    """With a shared cache (TOKEN_CACHE_SECONDS > 0) active tokens skip the database, revocation does not."""

    @pytest.fixture(autouse=True)
    def _enabled(self, settings) -> None:  # type: ignore[no-untyped-def]
        settings.TOKEN_CACHE_SECONDS = 60

    def test_it_serves_an_active_token_without_a_query(self, team: Team) -> None:
        created = make_token(team.bob)
        assert token_authenticate(raw=created.raw, workspace_slug="acme-tools").ok
        with CaptureQueriesContext(connection) as queries:
            result = token_authenticate(raw=created.raw, workspace_slug="acme-tools")
        assert result.ok and result.token is not None and result.token.pk == created.token.pk
        assert result.token.workspace.slug == "acme-tools" and len(queries) == 0

    def test_it_refuses_on_the_next_request_after_a_revocation(self, team: Team) -> None:
        created = make_token(team.bob)
        assert token_authenticate(raw=created.raw, workspace_slug="acme-tools").ok  # now cached
        token_revoke(token=created.token, actor=team.alice.user)
        assert token_authenticate(raw=created.raw, workspace_slug="acme-tools").refusal == Refusal.REVOKED

    def test_it_cannot_put_back_a_state_read_before_the_revocation(self, team: Team) -> None:
        created = make_token(team.bob)
        # A request that found nothing in the cache, then lost the race against the revocation:
        token_revoke(token=created.token, actor=team.alice.user)
        assert (
            token_authenticate(raw=created.raw, workspace_slug="acme-tools", cached=None).refusal
            == Refusal.REVOKED
        )
        from django.core.cache import cache

        assert cache.get(token_cache_key(created.raw)) == "check-database"  # the marker stayed

    def test_it_still_checks_expiry_on_every_request(self, team: Team) -> None:
        now = timezone.now()
        created = token_create(
            workspace=team.workspace,
            holder=team.bob,
            name="x",
            expires_in=60,
            created_by=team.alice.user,
            now=now,
        )
        assert token_authenticate(raw=created.raw, workspace_slug="acme-tools", now=now).ok
        later = now + timedelta(seconds=60)
        assert (
            token_authenticate(raw=created.raw, workspace_slug="acme-tools", now=later).refusal
            == Refusal.EXPIRED
        )

    def test_it_keeps_the_workspace_check(self, team: Team) -> None:
        created = make_token(team.bob)
        assert token_authenticate(raw=created.raw, workspace_slug="acme-tools").ok
        assert (
            token_authenticate(raw=created.raw, workspace_slug="charlies").refusal == Refusal.WRONG_WORKSPACE
        )

    def test_it_forgets_cached_tokens_when_their_workspace_changes(self, team: Team) -> None:
        created = make_token(team.bob)
        assert token_authenticate(raw=created.raw, workspace_slug="acme-tools").ok
        team.workspace.rate_limit_per_minute = 7
        team.workspace.save()
        result = token_authenticate(raw=created.raw, workspace_slug="acme-tools")
        assert result.token is not None and result.token.workspace.rate_limit_per_minute == 7

    def test_it_forgets_a_deleted_token(self, team: Team) -> None:
        created = make_token(team.bob)
        assert token_authenticate(raw=created.raw, workspace_slug="acme-tools").ok
        Token.objects.filter(pk=created.token.pk).delete()
        assert token_authenticate(raw=created.raw, workspace_slug="acme-tools").refusal == Refusal.UNKNOWN


# --------------------------------------------------------------------------- SQLite: reads reused until any write


@pytest.fixture
def sqlite_only() -> None:
    # The reuse of token reads is SQLite's (PRAGMA data_version); PostgreSQL reads every time. Tests using
    # this fixture carry @pytest.mark.only_on("sqlite"), so the PostgreSQL run deselects them.
    assert connection.vendor == "sqlite"


@pytest.fixture
def token_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The token hashes actually read from the database (not reused), in order."""
    from tokens import services

    reads: list[str] = []
    original = services._TokenLookup._token

    def spy(self: Any, db: Any, row: Any) -> Token | None:
        token = original(self, db, row)
        reads.append(token.token_hash if token else "-")
        return token

    monkeypatch.setattr(services._TokenLookup, "_token", spy)
    return reads


@pytest.mark.only_on("sqlite")
def test_it_reuses_a_token_read_while_nothing_was_written(
    sqlite_only: None, token_reads: list[str], team: Team
) -> None:
    created = make_token(team.bob)
    for _ in range(3):
        assert token_authenticate(raw=created.raw, workspace_slug="acme-tools").ok
    assert token_reads == [created.token.token_hash]


@pytest.mark.only_on("sqlite")
def test_a_revocation_on_the_same_connection_is_seen_at_once(
    sqlite_only: None, token_reads: list[str], team: Team
) -> None:
    created = make_token(team.bob)
    assert token_authenticate(raw=created.raw, workspace_slug="acme-tools").ok
    token_revoke(token=created.token, actor=team.alice.user)
    assert token_authenticate(raw=created.raw, workspace_slug="acme-tools").refusal == Refusal.REVOKED
    assert len(token_reads) == 2


@pytest.mark.only_on("sqlite")
@pytest.mark.django_db(transaction=True)
def test_a_revocation_by_another_connection_is_seen_at_once(
    sqlite_only: None, token_reads: list[str], team: Team
) -> None:
    """Another process (the CLI, a second server) writes through its own connection: the next read here
    must see it, with no signal, cache or message in between."""
    import sqlite3

    created = make_token(team.bob)
    assert token_authenticate(raw=created.raw, workspace_slug="acme-tools").ok
    assert token_authenticate(raw=created.raw, workspace_slug="acme-tools").ok
    assert len(token_reads) == 1
    name = str(connection.settings_dict["NAME"])
    other = sqlite3.connect(name, uri=name.startswith("file:"), isolation_level=None)
    try:
        other.execute(
            f"UPDATE {Token._meta.db_table} SET revoked_at = ? WHERE id = ?",  # noqa: S608
            (timezone.now().isoformat(), created.token.pk),
        )
    finally:
        other.close()
    assert token_authenticate(raw=created.raw, workspace_slug="acme-tools").refusal == Refusal.REVOKED
    assert len(token_reads) == 2


@pytest.mark.only_on("sqlite")
def test_unknown_tokens_are_not_kept(sqlite_only: None, token_reads: list[str], team: Team) -> None:
    from tokens import services

    raw = token_format.generate()
    for _ in range(2):
        assert token_authenticate(raw=raw, workspace_slug="acme-tools").refusal == Refusal.UNKNOWN
    assert token_reads == ["-", "-"]
    store = getattr(services._sqlite_reads, "store", None)
    assert store is None or token_format.hash_token(raw) not in store[1]


def test_it_lets_a_member_create_only_their_own_tokens(team: Team) -> None:
    from workspaces.permissions import NotAllowed

    assert (
        token_create(
            workspace=team.workspace, holder=team.bob, name="mine", expires_in=None, created_by=team.bob.user
        ).token.member
        == team.bob
    )
    with pytest.raises(NotAllowed):
        token_create(
            workspace=team.workspace, holder=team.amy, name="x", expires_in=None, created_by=team.bob.user
        )
    assert not Token.objects.filter(member=team.amy).exists()


def test_it_lets_an_admin_create_a_token_for_another_member(team: Team) -> None:
    created = token_create(
        workspace=team.workspace, holder=team.bob, name="CI", expires_in=None, created_by=team.amy.user
    )
    assert created.token.member == team.bob and created.token.created_by == team.amy.user
    event = AuditEvent.objects.get(action="token.create")
    assert event.actor == team.amy.user and event.subject == team.bob.user


def test_it_refuses_tokens_made_by_a_stranger(team: Team) -> None:
    from workspaces.permissions import NotAllowed

    with pytest.raises(NotAllowed):
        token_create(
            workspace=team.workspace, holder=team.bob, name="x", expires_in=None, created_by=team.charlie.user
        )


def test_it_refuses_a_holder_whose_membership_ended(team: Team) -> None:
    from workspaces.models import Member

    Member.objects.filter(pk=team.bob.pk).update(ended_at=timezone.now())
    with pytest.raises(TokenError) as info:
        token_create(
            workspace=team.workspace, holder=team.bob, name="x", expires_in=None, created_by=team.alice.user
        )
    assert info.value.field == "holder" and not Token.objects.exists()


def test_it_lets_members_revoke_only_their_own_tokens(team: Team) -> None:
    from workspaces.permissions import NotAllowed

    amys = make_token(team.amy).token
    bobs = make_token(team.bob).token
    with pytest.raises(NotAllowed):
        token_revoke(token=amys, actor=team.bob.user)
    with pytest.raises(NotAllowed):
        token_revoke(token=bobs, actor=team.charlie.user)
    assert Token.objects.get(pk=amys.pk).revoked_at is None
    assert token_revoke(token=bobs, actor=team.bob.user).revoked_at is not None
    assert token_revoke(token=amys, actor=team.alice.user).revoked_at is not None
