"""TOKENS_PER_MEMBER_MAX: a member holds at most that many working tokens per workspace (token_create and
token_rotate, under a lock of the membership row), with the error beside the form field."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from tests.conftest import Team, login
from tests.factories import make_token
from tests.gateway.conftest import error_beside
from tokens.models import Token
from tokens.services import TokenError, token_create, token_revoke, token_rotate

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _cap_of_three(settings) -> None:  # type: ignore[no-untyped-def]
    settings.TOKENS_PER_MEMBER_MAX = 3


def test_the_default_cap_is_50() -> None:
    from aerostack import settings as module  # the fixture above lowers the live setting to 3

    assert module.TOKENS_PER_MEMBER_MAX == 50


def test_it_refuses_a_token_beyond_the_cap(team: Team) -> None:
    for n in range(3):
        make_token(team.bob, name=f"t{n}")
    with pytest.raises(TokenError, match="already holds 3 active tokens") as raised:
        make_token(team.bob, name="one too many")
    assert raised.value.field == "holder"
    assert Token.objects.filter(member=team.bob).count() == 3
    make_token(team.alice, name="others are not affected")


def test_revoked_and_expired_tokens_do_not_count(team: Team) -> None:
    tokens = [make_token(team.bob, name=f"t{n}", expires_in=60) for n in range(3)]
    token_revoke(token=tokens[0].token, actor=team.bob.user)
    make_token(team.bob, name="in the revoked one's place")
    later = timezone.now() + timedelta(minutes=2)
    token_create(
        workspace=team.workspace,
        holder=team.bob,
        name="after expiry",
        expires_in=None,
        created_by=team.bob.user,
        now=later,
    )


def test_a_rotation_replaces_and_a_token_in_grace_counts_until_it_stops(team: Team) -> None:
    tokens = [make_token(team.bob, name=f"t{n}") for n in range(3)]
    now = timezone.now()
    # At the cap, a rotation is allowed: the successor takes the rotated token's place.
    token_rotate(token=tokens[0].token, actor=team.bob.user, grace_seconds=3600, now=now)
    # The old one still works for an hour and counts: a second rotation with grace would make 5.
    with pytest.raises(TokenError, match="already holds 3"):
        token_rotate(token=tokens[1].token, actor=team.bob.user, grace_seconds=3600, now=now)
    # Once its grace is over, it no longer counts.
    token_rotate(token=tokens[1].token, actor=team.bob.user, grace_seconds=0, now=now + timedelta(hours=1))


def test_the_error_is_shown_beside_the_field(client: Client, team: Team) -> None:
    for n in range(3):
        make_token(team.bob, name=f"t{n}")
    response = login(client, team.bob).post(
        "/workspaces/acme-tools/tokens/new/", {"name": "Fourth", "expires": "never"}
    )
    assert response.status_code == 400
    assert "already holds 3 active tokens" in error_beside(response, "name")  # members have no holder field
    response = login(client, team.alice).post(
        "/workspaces/acme-tools/tokens/new/", {"name": "Fourth", "expires": "never", "holder": team.bob.pk}
    )
    assert response.status_code == 400
    assert "already holds 3 active tokens" in error_beside(response, "holder")


@pytest.mark.only_on("postgresql")
@pytest.mark.django_db(transaction=True)
def test_concurrent_creates_cannot_exceed_the_cap(team: Team) -> None:
    """Eight threads (each with its own database connection) create at once: the row lock lets 3 through."""
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def create(n: int) -> None:
        try:
            barrier.wait()
            make_token(team.bob, name=f"racer {n}")
            outcomes.append("created")
        except TokenError:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=create, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["created"] * 3 + ["refused"] * 5
    assert Token.objects.filter(member=team.bob, revoked_at__isnull=True).count() == 3
